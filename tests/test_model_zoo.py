"""metafile.yml and the README's model zoo list every config, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').glob('*.py'))
ZOO_COLUMNS = [
    'model',
    'backbone',
    'data',
    "paper's result",
    "official code's result",
    "mmdet's result",
    "backbone's ImageNet top-1",
    'train (8 GPUs)',
    'evaluate',
]

B = 'box AP'
M = 'mask AP'
#: Every config's published result (COCO val 1x box/mask AP, ADE20K Semantic FPN mIoU), copied from
#: the papers: the PVT paper (Wang et al., ICCV 2021) for PVT-T/S/M/L, the PVTv2 paper (Wang et al.,
#: CVMJ 2022) for b0..b5. UPerNet: none published.
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
    # The PVT paper's RetinaNet 3x multi-scale table (PVT-S and PVT-M; T and L in no source we could
    # read); the release's other detectors have the release's numbers only (OFFICIAL_CODE below);
    # DINO and Mask2Former on PVTv2-b2 are beyond any release.
    'retinanet_pvt_s_fpn_3x_ms_coco': {B: 42.2},
    'retinanet_pvt_m_fpn_3x_ms_coco': {B: 43.2},
    **{
        name: None
        for name in (
            'retinanet_pvt_t_fpn_3x_ms_coco',
            'retinanet_pvt_l_fpn_3x_ms_coco',
            'retinanet_pvt_s_fpn_1x_coco_640',
            'detr_pvt_s_50e_coco',
            'dino_pvtv2_b2_4scale_12e_coco',
            'fpn_pvtv2_b2_li_512x512_40k_ade20k',
            'mask2former_pvtv2_b2_512x512_160k_ade20k',
            *(
                f'{head}_pvtv2_{arch}_fpn_3x_ms_coco'
                for head in ('mask_rcnn', 'cascade_mask_rcnn', 'atss', 'gfl')
                for arch in ('b2', 'b2_li')
            ),
            'sparse_rcnn_pvtv2_b2_fpn_300p_3x_ms_coco',
            'sparse_rcnn_pvtv2_b2_li_fpn_300p_3x_ms_coco',
        )
    },
}


#: What the official code reports for its own configs, with logs and models (read with the search
#: tools): whai362/PVT detection/README.md gives the papers' numbers for every detector above;
#: segmentation/README.md gives "mIoU(code)" for Semantic FPN with PVT v1. PVTv2-Seg gives none.
OFFICIAL_CODE: dict[str, dict[str, float]] = {
    **{name: metrics for name, metrics in PUBLISHED.items() if name.endswith('_1x_coco') and metrics},
    'fpn_pvt_t_512x512_40k_ade20k': {'mIoU': 36.6},
    'fpn_pvt_s_512x512_40k_ade20k': {'mIoU': 41.9},
    'fpn_pvt_m_512x512_40k_ade20k': {'mIoU': 43.5},
    'fpn_pvt_l_512x512_40k_ade20k': {'mIoU': 43.5},
    # whai362/PVT detection/README.md, the release's other detectors (3x multi-scale unless named)
    'mask_rcnn_pvtv2_b2_fpn_3x_ms_coco': {B: 47.8, M: 43.1},
    'cascade_mask_rcnn_pvtv2_b2_fpn_3x_ms_coco': {B: 51.1, M: 44.4},
    'cascade_mask_rcnn_pvtv2_b2_li_fpn_3x_ms_coco': {B: 50.9, M: 44.0},
    'atss_pvtv2_b2_fpn_3x_ms_coco': {B: 49.9},
    'atss_pvtv2_b2_li_fpn_3x_ms_coco': {B: 48.9},
    'gfl_pvtv2_b2_fpn_3x_ms_coco': {B: 50.2},
    'gfl_pvtv2_b2_li_fpn_3x_ms_coco': {B: 49.2},
    'sparse_rcnn_pvtv2_b2_fpn_300p_3x_ms_coco': {B: 50.1},
    'sparse_rcnn_pvtv2_b2_li_fpn_300p_3x_ms_coco': {B: 48.9},
    'detr_pvt_s_50e_coco': {B: 34.7},
    'retinanet_pvt_s_fpn_1x_coco_640': {B: 38.7},
}

#: mmdetection's own trainings of its PVT port (mmdetection configs/pvt/README.md): RetinaNet only.
MMDET: dict[str, dict[str, float]] = {
    'retinanet_pvt_t_fpn_1x_coco': {B: 36.6},
    'retinanet_pvt_s_fpn_1x_coco': {B: 40.4},
    'retinanet_pvt_m_fpn_1x_coco': {B: 41.7},
    'retinanet_pvtv2_b0_fpn_1x_coco': {B: 37.1},
    'retinanet_pvtv2_b1_fpn_1x_coco': {B: 41.2},
    'retinanet_pvtv2_b2_fpn_1x_coco': {B: 44.6},
    'retinanet_pvtv2_b3_fpn_1x_coco': {B: 46.0},
    'retinanet_pvtv2_b4_fpn_1x_coco': {B: 46.3},
    'retinanet_pvtv2_b5_fpn_1x_coco': {B: 46.1},
}

#: ImageNet-1K top-1 of each official pretrained file (whai362/PVT classification/README.md).
IMAGENET_TOP1 = {
    'pvt_tiny.pth': 75.1,
    'pvt_small.pth': 79.8,
    'pvt_medium.pth': 81.2,
    'pvt_large.pth': 81.7,
    'pvt_v2_b0.pth': 70.5,
    'pvt_v2_b1.pth': 78.7,
    'pvt_v2_b2_li.pth': 82.1,
    'pvt_v2_b2.pth': 82.0,
    'pvt_v2_b3.pth': 83.1,
    'pvt_v2_b4.pth': 83.6,
    'pvt_v2_b5.pth': 83.8,
}

#: metafile "Source" prefix -> the table its numbers must equal.
SOURCES = {'paper': PUBLISHED, 'official code': OFFICIAL_CODE, 'mmdet': MMDET}


def source_kind(source: str) -> str:
    if source.startswith(('PVT paper', 'PVTv2 paper')):
        return 'paper'
    kind = source.split(':', 1)[0]
    assert kind in SOURCES, source
    return kind


def test_metafile_covers_every_config_exactly() -> None:
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    listed = [m['Config'] for m in doc['Models']]
    assert sorted(listed) == CONFIGS
    collections = {c['Name'] for c in doc['Collections']}
    for model in doc['Models']:
        assert model['In Collection'] in collections
        assert model['Name'] == Path(model['Config']).stem
        for result in model['Results'] or []:
            source_kind(result['Source'])


def metafile_results() -> dict[str, dict[str, dict[str, float] | None]]:
    """source kind -> config name -> the metrics the metafile lists from that source (None: none)."""
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    listed: dict[str, dict[str, dict[str, float] | None]] = {kind: {} for kind in SOURCES}
    for model in doc['Models']:
        for kind in SOURCES:
            listed[kind][model['Name']] = None
        for result in model['Results'] or []:
            kind = source_kind(result['Source'])
            assert listed[kind][model['Name']] is None, f'{model["Name"]}: two results from {kind}'
            listed[kind][model['Name']] = result['Metrics']
    return listed


def test_metafile_numbers_are_the_published_ones() -> None:
    listed = metafile_results()
    assert listed['paper'] == PUBLISHED
    for kind in ('official code', 'mmdet'):
        assert {name: m for name, m in listed[kind].items() if m is not None} == SOURCES[kind], kind


def test_official_detection_numbers_are_the_papers() -> None:
    """The release's detection README repeats the papers' numbers; its Semantic FPN ones differ."""
    for name, metrics in OFFICIAL_CODE.items():
        if PUBLISHED[name] is not None:  # the release's other detectors are in no paper table we read
            assert (metrics == PUBLISHED[name]) == name.endswith('_1x_coco'), name


@pytest.mark.slow  # reads every config: minutes on a shared 2-core machine
def test_metafile_names_each_pretrained_file_and_its_imagenet_top1() -> None:
    doc = yaml.safe_load((ROOT / 'metafile.yml').read_text())
    for model in doc['Models']:
        pretrained = model['Metadata']['Pretrained']
        cfg = Config.fromfile(str(ROOT / model['Config']))
        assert pretrained['File'] == cfg.model.backbone.init_cfg.checkpoint, model['Name']
        assert pretrained['ImageNet top-1'] == IMAGENET_TOP1[Path(pretrained['File']).name], model['Name']
        assert pretrained['Source'].startswith('whai362/PVT classification/README.md'), model['Name']


def readme_zoo_rows() -> dict[str, list[str]]:
    """config name -> the cells of its row in the README's model zoo table."""
    readme = (ROOT / 'README.md').read_text()
    zoo = readme[readme.index('## Model zoo') :]
    zoo = zoo[: zoo.index('\n## ', 1)]
    header = next(line for line in zoo.splitlines() if line.startswith('| model |'))
    assert [c.strip() for c in header.strip().strip('|').split('|')] == ZOO_COLUMNS
    rows = {}
    for line in zoo.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        match = re.search(r'tools/dist_train\.sh configs/(\w+)\.py', line)
        if match:
            assert len(cells) == len(ZOO_COLUMNS), line
            assert match.group(1) not in rows, f'{match.group(1)} is listed twice'
            rows[match.group(1)] = cells
    return rows


def parse_result(cell: str) -> dict[str, float] | None:
    """'box AP 36.7, mask AP 35.1' -> {'box AP': 36.7, 'mask AP': 35.1}; '—' or '— (none published)' -> None."""
    if cell.startswith('—'):
        return None
    metrics = {}
    for part in cell.split(','):
        name, value = part.strip().rsplit(' ', 1)
        metrics[name] = float(value)
    return metrics


def test_readme_numbers_are_the_published_ones() -> None:
    rows = readme_zoo_rows()
    column = ZOO_COLUMNS.index
    assert {name: parse_result(cells[column("paper's result")]) for name, cells in rows.items()} == PUBLISHED
    for header, table in (("official code's result", OFFICIAL_CODE), ("mmdet's result", MMDET)):
        listed = {name: parse_result(cells[column(header)]) for name, cells in rows.items()}
        assert {name: m for name, m in listed.items() if m is not None} == table, header


@pytest.mark.slow  # reads every config: minutes on a shared 2-core machine
def test_readme_imagenet_top1_is_the_pretrained_files() -> None:
    column = ZOO_COLUMNS.index("backbone's ImageNet top-1")
    for name, cells in readme_zoo_rows().items():
        checkpoint = Config.fromfile(str(ROOT / 'configs' / f'{name}.py')).model.backbone.init_cfg.checkpoint
        assert float(cells[column]) == IMAGENET_TOP1[Path(checkpoint).name], name


@pytest.mark.slow  # reads every config: minutes on a shared 2-core machine
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
