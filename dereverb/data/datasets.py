"""The SpeechBrain datasets of a prepared ``data`` config: ``{"train", "valid", "test"}`` of
``{"id", "reverberant", "target"}`` items.

What an item holds comes from the kind (:meth:`~dereverb.data.kinds.DatasetKind.item`): a pair of
files read (and cropped for training), or a pair mixed afresh (the mixing kinds' training split).
"""

from __future__ import annotations

from dereverb.data.items import ITEM_KEYS
from dereverb.data.manifests import AUDIO_COLUMNS, SPLITS, find_prepared, read_manifest
from dereverb.data.preparation import locate, prepare
from dereverb.data.settings import data_settings
from dereverb.errors import DataError

__all__ = ["build_datasets"]


def build_datasets(data_cfg, sample_rate: int, progress: bool = True) -> dict:
    """Prepare once (on the main process) and return the SpeechBrain datasets of each split.

    Items give ``id`` (str), ``reverberant`` and ``target`` (float32 Tensor[T], aligned, same length).
    Training items are cropped to ``data.segment_s`` at a random position (the same crop for
    both). The mixing kinds (``demo``, ``simulate``) convolve each training crop with a random RIR
    of the training bank every time, and place an utterance shorter than ``segment_s`` at a random
    position in silence (so every item has exactly ``segment_s``, the reverberant tail included);
    the paired kinds (``folder``, ``whamr``) use shorter pairs whole (``PaddedBatch`` pads them).
    Validation and test items are whole utterances. The manifest's other columns
    (``duration_s``, ``speaker``, ``t60_s``, ...) stay in ``dataset.data`` for sorting/filtering;
    the audio columns as ``<column>_path``.

    Args:
        data_cfg: the ``data`` config (DictConfig or dict).
        sample_rate: 8000 or 16000.
        progress: show tqdm bars while preparing.

    Returns:
        dict: ``{"train", "valid", "test"}`` -> ``DynamicItemDataset``.

    Raises:
        DataError: a bad setting, bad input data, or a preparation that failed on the main process.
    """
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.utils.distributed import run_on_main

    s = data_settings(data_cfg, sample_rate)
    run_on_main(prepare, kwargs={"data_cfg": s, "sample_rate": sample_rate, "progress": progress})
    p = locate(s, sample_rate)
    meta = find_prepared(p.folder)
    if meta is None:
        raise DataError(f"{p.folder}: not prepared (the preparation on the main process failed?)")
    # roots from the current config win, so a moved source folder still works
    replacements = {**meta["roots"], "prep_root": str(p.folder), **p.kind.roots()}
    out = {}
    for split in SPLITS:
        data = read_manifest(p.manifests[split], replacements)
        for row in data.values():
            for column in AUDIO_COLUMNS:
                if column in row:
                    row[f"{column}_path"] = row.pop(column)
        item, columns = p.kind.item(split, p.folder)
        dataset = DynamicItemDataset(data, output_keys=list(ITEM_KEYS))
        dataset.add_dynamic_item(item.__call__, takes=[f"{c}_path" for c in columns], provides=list(ITEM_KEYS[1:]))
        dataset.set_output_keys(list(ITEM_KEYS))
        out[split] = dataset
    return out
