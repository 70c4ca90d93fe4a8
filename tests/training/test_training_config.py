"""Every training config in ``conf/`` composes, resolves, validates and instantiates; bad values are refused."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dereverb.config import CONF_DIR, compose
from dereverb.errors import ConfigError, DataError
from dereverb.losses import LOSSES
from dereverb.models import DTCN, TCN
from dereverb.training.config import validate

PRIMARY = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem != "prepare")
GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("model", "data", "optim", "loss", "run")}
GROUPS["debug"] = sorted(p.stem for p in (CONF_DIR / "debug").glob("*.yaml"))


def _required(option: str, tmp_path) -> list[str]:
    """The overrides a data option needs to validate (its ``???`` folders)."""
    return {
        "folder": [f"data.root={tmp_path}"],
        "whamr": [f"data.root={tmp_path}"],
        "simulate": [f"data.clean_root={tmp_path}"],
    }.get(option, [])


def test_the_expected_configs_are_there():
    assert PRIMARY == ["dtcn", "dtcn_16k", "tcn"]
    assert GROUPS["model"] == ["dtcn", "dtcn_small", "tcn", "tcn_small"]
    assert GROUPS["debug"] == ["none", "smoke"]


@pytest.mark.parametrize("name", PRIMARY)
@pytest.mark.parametrize(("group", "option"), [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_composes_and_validates(name, group, option, tmp_path):
    cfg = compose(name, [f"{group}={option}", *_required(option if group == "data" else "", tmp_path)])
    validate(cfg)  # resolves every interpolation, checks every value (raises otherwise)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["L"] == cfg.sample_rate // 500
    LOSSES[cfg.loss.name](**{k: v for k, v in cfg.loss.items() if k != "name"})
    opt = partial(torch.optim.Adam, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    opt([torch.nn.Parameter(torch.zeros(1))])
    if group == "debug" and option == "smoke":
        assert cfg.data.kind == "demo"
        assert cfg.data.train_rirs == 4
        assert cfg.run.epochs == 1
        assert cfg.run.limit_train_batches == 4
        assert cfg.output_dir == f"results/{cfg.name}-smoke/{cfg.seed}"


@pytest.mark.parametrize(
    ("name", "model", "cls", "n_params"),
    [
        # the published sizes plus the identity start's mask bias (N parameters)
        ("dtcn", "dtcn", DTCN, 3_518_736 + 512),
        ("dtcn", "tcn", TCN, 3_408_048 + 512),
        ("tcn", "tcn", TCN, 3_408_048 + 512),
        ("dtcn", "dtcn_small", DTCN, 1_198_816 + 256),
        ("tcn", "tcn_small", TCN, 1_161_888 + 256),
    ],
)
def test_model_presets_instantiate_with_the_published_sizes(name, model, cls, n_params):
    cfg = compose(name, [f"model={model}"])
    net = instantiate(cfg.model)
    assert type(net) is cls
    assert sum(p.numel() for p in net.parameters()) == n_params
    assert net.get_config()["L"] == 16


def test_16k_config_scales_the_encoder_window():
    cfg = compose("dtcn_16k")
    assert cfg.sample_rate == 16000
    assert cfg.name == "dtcn_16k"
    net = instantiate(cfg.model)
    assert type(net) is DTCN
    assert net.get_config()["L"] == 32
    assert compose("dtcn_16k", ["model=tcn_small"]).model.L == 32


def _composed(name: str, overrides=()) -> dict:
    """A primary config composed with Hydra's own config (less its runtime facts), unresolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(hydra_compose(name, list(overrides), return_hydra_config=True))
    for key in ("runtime", "overrides"):  # the facts of this process, the overrides as given
        cfg["hydra"].pop(key)
    for key in ("config_name", "override_dirname"):  # the config's name, the overrides as given
        cfg["hydra"]["job"].pop(key)
    return cfg


def test_primary_configs_differ_only_in_what_they_say():
    dtcn, tcn = (OmegaConf.to_container(compose(n), resolve=True) for n in ("dtcn", "tcn"))
    assert dtcn["model"]["_target_"] == "dereverb.models.DTCN"
    assert tcn["model"]["_target_"] == "dereverb.models.TCN"
    for key in ("data", "optim", "loss", "run", "sample_rate", "seed"):
        assert dtcn[key] == tcn[key], key


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("tcn", ["model=tcn", "name=tcn"]),  # conf/tcn.yaml: the DTCN recipe with the TCN model
        ("dtcn_16k", ["sample_rate=16000", "name=dtcn_16k"]),  # conf/dtcn_16k.yaml: the DTCN recipe at 16 kHz
    ],
)
@pytest.mark.parametrize("more", [[], ["debug=smoke"], ["model=dtcn_small", "seed=3"], ["data=whamr"]])
def test_derived_configs_are_the_dtcn_recipe_with_their_own_settings(name, overrides, more):
    """A derived config composes exactly as ``conf/dtcn.yaml`` with its few overrides: it cannot drift."""
    assert _composed(name, more) == _composed("dtcn", [*overrides, *more])
    assert list(_composed(name)) == list(_composed("dtcn"))  # the same keys, in the same order


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optim.lr=-1"], r"^optim\.lr: -1 "),
        (["optim.lr=0"], r"^optim\.lr: 0 "),
        (["sample_rate=22050"], r"^sample_rate: 22050 "),
        (["seed=1.5"], r"^seed: 1\.5 "),
        (["run.epochs=0"], r"^run\.epochs: 0 "),
        (["run.precision=fp8"], r"^run\.precision: 'fp8' "),
        (["run.best_key=loss"], r"^run\.best_key: 'loss' "),
        (["run.ema_decay=1.0"], r"^run\.ema_decay: 1\.0 is not valid \(null or a number between 0 and 1"),
        (["run.ema_decay=0.0"], r"^run\.ema_decay: 0\.0 "),
        (["run.ema_decay=1"], r"^run\.ema_decay: 1 "),
        (["run.ema_decay=abc"], r"^run\.ema_decay: 'abc' "),
        (["run.ckpt_interval_steps=10"], r"^run\.ckpt_interval_steps: 10 .*ckpt_interval_minutes"),
        (["run.limit_train_batches=0"], r"^run\.limit_train_batches: 0 "),
        (["run.max_steps=0"], r"^run\.max_steps: 0 is not valid \(null or an integer >= 1\)"),
        (["run.max_steps=2.5"], r"^run\.max_steps: 2\.5 "),
        (["run.max_minutes=0"], r"^run\.max_minutes: 0 is not valid \(null or minutes > 0\)"),
        (["run.max_minutes=-5"], r"^run\.max_minutes: -5 "),
        (["run.max_minutes=inf"], r"^run\.max_minutes: inf "),
        (["run.max_minutes=abc"], r"^run\.max_minutes: 'abc' "),
        (["run.device=tpu"], r"^run\.device: 'tpu' "),
        (["optim.plateau_factor=1.5"], r"^optim\.plateau_factor: 1\.5 "),
        (["data=folder"], r"^data\.root is required"),
        (["data=simulate"], r"^data\.clean_root is required"),
        (["model._target_=torch.nn.Linear"], r"^model\._target_: 'torch\.nn\.Linear' "),
        (["model.H=abc"], r"^model\.H: 'abc' is not valid \(an integer >= 1\)"),
        (["model.R=0"], r"^model\.R: 0 "),
        (["model.skip_channels=-1"], r"^model\.skip_channels: -1 "),
        (["+run.foo=1"], r"^run\.foo: unknown key \(the recipe does not read it; run takes batch_size, "),
        (["+optim.betas=[0.8,0.9]"], r"^optim\.betas: unknown key "),
        (["+model.dropout=0.1"], r"^model\.dropout: unknown key "),
        (["model=tcn", "+model.offset_groups=2"], r"^model\.offset_groups: unknown key "),  # a DTCN argument
        (["+loss.stft_weight=2"], r"^loss\.stft_weight: unknown key "),  # an argument of si_sdr_stft only
        (["loss=si_sdr_stoi", "+loss.sample_rate=8000"], r"^loss\.sample_rate: unknown key "),  # the recipe's
        (["loss=si_sdr_stoi", "loss.stoi_weight=-1"], r"^loss\.stoi_weight: -1 is not valid \(a finite number >= 0\)$"),
        (["loss=si_sdr_stft", "loss.stft_weight=inf"], r"^loss\.stft_weight: inf is not valid "),
        (["loss=si_sdr_stoi", "loss.stoi_weight=lots"], r"^loss\.stoi_weight: 'lots' is not valid "),
    ],
)
def test_validate_refuses_bad_values_with_one_line_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        validate(compose("dtcn", overrides))
    assert "\n" not in str(info.value)


def test_the_known_keys_are_the_keys_of_the_configs():
    from dereverb.training.config import OPTIM_KEYS, RUN_KEYS

    for name in PRIMARY:
        cfg = compose(name)
        assert set(cfg.run) == RUN_KEYS
        assert set(cfg.optim) == OPTIM_KEYS


@pytest.mark.parametrize("name", PRIMARY)
def test_the_job_log_is_not_written_before_the_run_folder_is_locked(name):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=name, return_hydra_config=True)
    assert list(cfg.hydra.job_logging.handlers) == ["console"]  # Hydra's default adds a train.log file
    assert list(cfg.hydra.job_logging.root.handlers) == ["console"]


def test_validate_checks_the_data_folders_exist(tmp_path):
    with pytest.raises(ConfigError, match=rf"^data\.root={tmp_path / 'nope'}: no such folder$"):
        validate(compose("dtcn", ["data=folder", f"data.root={tmp_path / 'nope'}"]))
    with pytest.raises(ConfigError, match=r"^data\.rir_root=.*: no such folder$"):
        validate(compose("dtcn", ["data=simulate", f"data.clean_root={tmp_path}", f"data.rir_root={tmp_path / 'x'}"]))


def test_validate_checks_the_data_settings():
    with pytest.raises(DataError, match=r"^data\.target=clean: this target is now called direct") as info:
        validate(compose("dtcn", ["data=folder", "data.root=/", "data.target=clean"]))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", PRIMARY)
def test_a_loss_that_needs_the_sample_rate_gets_the_recipes(name):
    from dereverb.training.experiment import build_loss

    cfg = compose(name, ["loss=si_sdr_stoi", "loss.stoi_weight=3", "loss.extended=true"])
    loss = build_loss(cfg)
    assert (loss.stoi.sample_rate, loss.stoi_weight, loss.stoi.extended) == (cfg.sample_rate, 3.0, True)
    assert build_loss(compose(name)).__class__.__name__ == "NegSISDR"
