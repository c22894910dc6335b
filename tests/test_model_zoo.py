"""metafile.yml and the README's model zoo list every config, and nothing that does not exist."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').glob('*.py'))


def test_metafile_covers_every_config_exactly() -> None:
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    listed = [m['Config'] for m in doc['Models']]
    assert sorted(listed) == CONFIGS
    collections = {c['Name'] for c in doc['Collections']}
    for model in doc['Models']:
        assert model['In Collection'] in collections
        assert model['Name'] == Path(model['Config']).stem
        for result in model['Results'] or []:
            assert result['Source'].startswith(('PVT paper', 'PVTv2 paper')), model['Name']


def test_paper_numbers_are_the_published_ones() -> None:
    """Spot checks against the papers (REFERENCE.md): a typo here would mislead users."""
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    metrics = {m['Name']: m['Results'][0]['Metrics'] for m in doc['Models'] if m['Results']}
    assert metrics['retinanet_pvt_s_fpn_1x_coco'] == {'box AP': 40.4}
    assert metrics['mask_rcnn_pvt_l_fpn_1x_coco'] == {'box AP': 42.9, 'mask AP': 39.5}
    assert metrics['fpn_pvt_m_512x512_40k_ade20k'] == {'mIoU': 41.6}
    assert metrics['retinanet_pvtv2_b2_li_fpn_1x_coco'] == {'box AP': 43.6}
    assert metrics['fpn_pvtv2_b5_512x512_40k_ade20k'] == {'mIoU': 48.7}


def test_readme_zoo_lists_every_config_with_its_commands() -> None:
    readme = (ROOT / 'README.md').read_text()
    zoo = readme[readme.index('## Model zoo') :]
    for config in CONFIGS:
        assert f'`bash tools/dist_train.sh {config} 8`' in zoo, config
        assert f'`bash tools/dist_test.sh {config} work_dirs/' in zoo, config
