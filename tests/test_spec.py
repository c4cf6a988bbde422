"""The run specification: resolved once, in layers (defaults ← file ← --set), named by its resolved hash."""

from __future__ import annotations

import pytest

from distillrec.errors import ConfigError
from distillrec.experiment.spec import parse_assignments, read_config_file, resolve_spec


def test_layers_file_then_set(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "opts.yaml"
    path.write_text("train: {lr: 5.0e-4, epochs: 7}\nmodel: {reg_weight: 1.0e-3}\nckd: {lambda_kd: 0.1}\n")
    flat = {**read_config_file(path), **parse_assignments(["lr=2e-3"])}
    spec = resolve_spec("vbpr", "scientific", flat, "ckd", seed=4)
    assert (
        spec.train["lr"] == 2e-3 and spec.train["epochs"] == 7
    )  # --set over the file, the file over defaults
    assert spec.params["reg_weight"] == 1e-3 and spec.distill_options["lambda_kd"] == 0.1
    assert spec.distill_options["lambda_g"] == 5.0  # the distiller's defaults are filled in
    assert spec.train_config().seed == 4 and "seed" not in spec.train
    assert spec.run_dir("runs").name == "seed4" and spec.run_dir("runs").parent.name.startswith("vbpr+ckd@")


def test_the_seed_does_not_name_the_configuration() -> None:
    a, b = resolve_spec("bprmf", "d", {}, seed=1), resolve_spec("bprmf", "d", {}, seed=2)
    assert a.key() == b.key() and a.run_dir("r").parent == b.run_dir("r").parent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: [1]\n", "'train' must be a mapping"),
        ("- 1\n", "must be a mapping of options"),
        ("train: {lr: [\n", "not valid YAML"),
    ],
)
def test_bad_configuration_files_are_one_line(tmp_path, text, message) -> None:  # noqa: ANN001
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config_file(path)


def test_unknown_keys_name_their_group() -> None:
    with pytest.raises(ConfigError, match="unknown option group 'sgfd'"):
        resolve_spec("vbpr", "d", {"sgfd.kd_weight": 1.0}, "ckd")
    with pytest.raises(ConfigError, match="ckd options"):
        resolve_spec("vbpr", "d", {"ckd.nope": 1.0}, "ckd")
    with pytest.raises(ConfigError, match="training options"):
        resolve_spec("vbpr", "d", {"train.lr": -1.0})


def test_print_config_is_what_the_run_writes(tmp_path, capsys, monkeypatch):
    import sys

    import yaml

    from distillrec.cli import main
    from distillrec.experiment.api import train

    cfg = tmp_path / "run.yaml"
    cfg.write_text("train: {lr: 0.002}\nreg_weight: 0.001\n")
    args = [
        "train",
        "-m",
        "BPRMF",
        "--config",
        str(cfg),
        "--set",
        "epochs=1",
        "--out",
        str(tmp_path / "runs"),
    ]
    monkeypatch.setattr(sys, "argv", ["distillrec", *args, "--print-config"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    header, _, body = capsys.readouterr().out.partition("\n")
    printed = yaml.safe_load(body)
    assert not (tmp_path / "runs").exists()  # nothing trained
    (r,) = train("bprmf", "scientific", set={"epochs": 1}, config=cfg, out=tmp_path / "runs", quiet=True)
    assert header == f"# {r.run_dir}"
    assert yaml.safe_load((r.run_dir / "config.yaml").read_text()) == printed
    assert printed["train"]["lr"] == 0.002 and printed["params"]["reg_weight"] == 0.001
