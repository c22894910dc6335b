"""metafile.yml and the README's model zoo list every config, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').glob('*.py'))

B = 'box AP'
M = 'mask AP'
#: Every config's published result (COCO val 1x box/mask AP, ADE20K Semantic FPN mIoU), copied from
#: the "Published results" section of /work/shared/REFERENCE.md: the PVT paper (Wang et al., ICCV
#: 2021) for PVT-T/S/M/L, the PVTv2 paper (Wang et al., CVMJ 2022) for b0..b5. UPerNet: none published.
PUBLISHED: dict[str, dict[str, float] | None] = {
    'retinanet_pvt_t_fpn_1x_coco': {B: 36.7},
    'retinanet_pvt_s_fpn_1x_coco': {B: 40.4},
    'retinanet_pvt_m_fpn_1x_coco': {B: 41.9},
    'retinanet_pvt_l_fpn_1x_coco': {B: 42.6},
    'retinanet_pvtv2_b0_fpn_1x_coco': {B: 37.2},
    'retinanet_pvtv2_b1_fpn_1x_coco': {B: 41.2},
    'retinanet_pvtv2_b2_li_fpn_1x_coco': {B: 43.6},
    'retinanet_pvtv2_b2_fpn_1x_coco': {B: 44.6},
    'retinanet_pvtv2_b3_fpn_1x_coco': {B: 45.9},
    'retinanet_pvtv2_b4_fpn_1x_coco': {B: 46.1},
    'retinanet_pvtv2_b5_fpn_1x_coco': {B: 46.2},
    'mask_rcnn_pvt_t_fpn_1x_coco': {B: 36.7, M: 35.1},
    'mask_rcnn_pvt_s_fpn_1x_coco': {B: 40.4, M: 37.8},
    'mask_rcnn_pvt_m_fpn_1x_coco': {B: 42.0, M: 39.0},
    'mask_rcnn_pvt_l_fpn_1x_coco': {B: 42.9, M: 39.5},
    'mask_rcnn_pvtv2_b0_fpn_1x_coco': {B: 38.2, M: 36.2},
    'mask_rcnn_pvtv2_b1_fpn_1x_coco': {B: 41.8, M: 38.8},
    'mask_rcnn_pvtv2_b2_li_fpn_1x_coco': {B: 44.1, M: 40.5},
    'mask_rcnn_pvtv2_b2_fpn_1x_coco': {B: 45.3, M: 41.2},
    'mask_rcnn_pvtv2_b3_fpn_1x_coco': {B: 47.0, M: 42.5},
    'mask_rcnn_pvtv2_b4_fpn_1x_coco': {B: 47.5, M: 42.7},
    'mask_rcnn_pvtv2_b5_fpn_1x_coco': {B: 47.4, M: 42.5},
    'fpn_pvt_t_512x512_40k_ade20k': {'mIoU': 35.7},
    'fpn_pvt_s_512x512_40k_ade20k': {'mIoU': 39.8},
    'fpn_pvt_m_512x512_40k_ade20k': {'mIoU': 41.6},
    'fpn_pvt_l_512x512_40k_ade20k': {'mIoU': 42.1},
    'fpn_pvtv2_b0_512x512_40k_ade20k': {'mIoU': 37.2},
    'fpn_pvtv2_b1_512x512_40k_ade20k': {'mIoU': 42.5},
    'fpn_pvtv2_b2_512x512_40k_ade20k': {'mIoU': 45.2},
    'fpn_pvtv2_b3_512x512_40k_ade20k': {'mIoU': 47.3},
    'fpn_pvtv2_b4_512x512_40k_ade20k': {'mIoU': 47.9},
    'fpn_pvtv2_b5_512x512_40k_ade20k': {'mIoU': 48.7},
    'upernet_pvt_t_512x512_160k_ade20k': None,
    'upernet_pvt_s_512x512_160k_ade20k': None,
    'upernet_pvt_m_512x512_160k_ade20k': None,
    'upernet_pvt_l_512x512_160k_ade20k': None,
    'upernet_pvtv2_b2_512x512_160k_ade20k': None,
}


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


def test_metafile_numbers_are_the_published_ones() -> None:
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    listed = {}
    for model in doc['Models']:
        results = model['Results'] or []
        assert len(results) <= 1, model['Name']
        listed[model['Name']] = results[0]['Metrics'] if results else None
    assert listed == PUBLISHED


def readme_zoo_rows() -> dict[str, str]:
    """config name -> the "paper's result" cell of its row in the README's model zoo table."""
    readme = (ROOT / 'README.md').read_text()
    zoo = readme[readme.index('## Model zoo') :]
    zoo = zoo[: zoo.index('\n## ', 1)]
    rows = {}
    for line in zoo.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        match = re.search(r'tools/dist_train\.sh configs/(\w+)\.py', line)
        if len(cells) == 6 and match:
            assert match.group(1) not in rows, f'{match.group(1)} is listed twice'
            rows[match.group(1)] = cells[3]
    return rows


def parse_result(cell: str) -> dict[str, float] | None:
    """'box AP 36.7, mask AP 35.1' -> {'box AP': 36.7, 'mask AP': 35.1}; '— (none published)' -> None."""
    if cell.startswith('—'):
        return None
    metrics = {}
    for part in cell.split(','):
        name, value = part.strip().rsplit(' ', 1)
        metrics[name] = float(value)
    return metrics


def test_readme_numbers_are_the_published_ones() -> None:
    rows = readme_zoo_rows()
    assert {name: parse_result(cell) for name, cell in rows.items()} == PUBLISHED


def test_training_resources_match_the_configs() -> None:
    """Each model's GPUs x images (its own, else its collection's) is what its config trains with."""
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    collections = {c['Name']: c['Metadata'] for c in doc['Collections']}
    for model in doc['Models']:
        resources = (
            model['Metadata'].get('Training Resources') or collections[model['In Collection']]['Training Resources']
        )
        match = re.fullmatch(r'8 GPUs x (\d+) images?', resources)
        assert match, f'{model["Name"]}: {resources!r}'
        cfg = Config.fromfile(str(ROOT / model['Config']))
        assert cfg.train_dataloader.batch_size == int(match.group(1)), model['Name']
        assert cfg.auto_scale_lr.base_batch_size == 8 * int(match.group(1)), model['Name']


def test_readme_zoo_lists_every_config_with_its_commands() -> None:
    readme = (ROOT / 'README.md').read_text()
    zoo = readme[readme.index('## Model zoo') :]
    for config in CONFIGS:
        assert f'`bash tools/dist_train.sh {config} 8`' in zoo, config
        assert f'`bash tools/dist_test.sh {config} work_dirs/' in zoo, config
