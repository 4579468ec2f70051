"""Train and evaluate a multimodal VAE; the command-line entry point of the example.

Run ``python examples/multimodal_vae/train.py --help``. A run folder holds ``config.json``,
``checkpoint.pt`` (written every epoch), ``metrics.json`` and ``metrics.csv``,
``classifiers.pt`` (for coherence) and the figures ``reconstructions.png``,
``conditional_generations.png`` and ``metrics.png``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from data import DATASETS, ModalitySpec, MultimodalDataset, get_dataset
from data.mnist_svhn_text import ALPHABET
from evaluate import (
    EvalSplit,
    Table,
    classifier_accuracies,
    evaluation_table,
    format_table,
    load_or_train_classifiers,
    save_classifiers,
    train_classifiers,
)
from figures import (
    save_conditional_generations,
    save_metric_curves,
    save_reconstructions,
    save_text_generations,
)
from model import AGGREGATIONS, MultimodalVAE
from objectives import elbo_loss
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
CLASSIFIERS_FILE = "classifiers.pt"
FIGURE_SAMPLES = 8

#: Every configuration key with its default; a config file may hold any subset of them.
DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "aggregation": None,
    "data_root": None,
    "latent_dim": 32,
    "batch_size": 64,
    "epochs": 10,
    "lr": 1e-3,
    "beta": 1.0,
    "likelihoods": {},
    "likelihood_weights": {},
    "reconstruct_all_components": False,
    "num_workers": 0,
    "seed": 0,
    "max_steps": None,
    "device": "cpu",
    "threads": 1,
    "eval": {
        "num_importance_samples": 100,
        "max_eval_samples": 1000,
        "max_log_likelihood_samples": 100,
        "max_test_loss_samples": 1000,
        "classifier_epochs": 5,
    },
    "notes": "",
}
#: Keys that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "max_steps", "device", "threads", "num_workers", "data_root", "eval", "notes"}
)


class UsageError(ValueError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every option but the modes overrides a config key."""
    parser = _Parser(
        prog="train.py",
        description="Train a multimodal VAE whose joint posterior is a barycenter, then "
        "evaluate it (latent linear probe, coherence, test log-likelihood).",
    )
    parser.add_argument("--config", type=Path, help="JSON config file; flags override it")
    parser.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--aggregation", help=f"one of {', '.join(AGGREGATIONS)}")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--latent-dim", type=int, dest="latent_dim")
    parser.add_argument("--beta", type=float, help="weight of the KL term")
    parser.add_argument("--data-root", dest="data_root", help="data directory")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--max-steps", type=int, dest="max_steps", help="stop after N steps")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of torch's intra-op pool (default 1; 0: every CPU this process may "
        "use): one thread keeps its speed when other processes share the cores",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-dir", type=Path, help="default: runs/<dataset>-<aggregation>")
    parser.add_argument(
        "--classifiers",
        type=Path,
        help="coherence classifiers: read from this file if it exists, else trained and "
        f"written to it (default: <run-dir>/{CLASSIFIERS_FILE}); lets runs share one judge",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    mode.add_argument("--resume", action="store_true", help="continue from its checkpoint")
    parser.add_argument(
        "--train-classifiers",
        action="store_true",
        help="only train the coherence classifiers into the run folder",
    )
    return parser


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return content


def _merge(config: dict[str, Any], update: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(update) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; known keys: {sorted(DEFAULTS)}")
    merged = {**config, **update}
    if "eval" in update:
        if not isinstance(update["eval"], dict):
            raise ValueError(f"{source}: eval must be an object, got {update['eval']!r}")
        unknown = sorted(set(update["eval"]) - set(DEFAULTS["eval"]))
        if unknown:
            raise ValueError(
                f"{source}: unknown eval keys {unknown}; known: {sorted(DEFAULTS['eval'])}"
            )
        merged["eval"] = {**config["eval"], **update["eval"]}
    return merged


def resolve_config(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The run's configuration and folder.

    Defaults, then the run folder's ``config.json`` when resuming, then ``--config``, then the
    flags, each overriding the one before.
    """
    config = copy.deepcopy(DEFAULTS)
    flags = {
        key: value for key, value in vars(args).items() if key in DEFAULTS and value is not None
    }
    if args.resume and args.run_dir is not None:
        if not (args.run_dir / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"no {CHECKPOINT_FILE} to resume in {args.run_dir}")
        config = _merge(config, _read_json(args.run_dir / CONFIG_FILE, "run config"), "run config")
    if args.config is not None:
        config = _merge(config, _read_json(args.config, "config file"), str(args.config))
    config = _merge(config, flags, "command line")
    _validate(config, need_aggregation=not args.train_classifiers)
    run_dir = args.run_dir or Path("runs") / f"{config['dataset']}-{config['aggregation']}"
    return config, run_dir


#: Numeric keys: (key, integer, smallest allowed value, whether that value is excluded).
_NumberCheck = tuple[str, bool, int, bool]
_NUMBERS: tuple[_NumberCheck, ...] = (
    ("latent_dim", True, 0, True),
    ("batch_size", True, 0, True),
    ("epochs", True, 0, False),
    ("num_workers", True, 0, False),
    ("threads", True, 0, False),
    ("seed", True, 0, False),
    ("lr", False, 0, True),
    ("beta", False, 0, False),
)
_EVAL_NUMBERS: tuple[_NumberCheck, ...] = (
    ("num_importance_samples", True, 0, True),
    ("max_eval_samples", True, 0, True),
    ("max_log_likelihood_samples", True, 0, True),
    ("max_test_loss_samples", True, 0, True),
    ("classifier_epochs", True, 0, False),
)


def _check_numbers(
    config: dict[str, Any], checks: tuple[_NumberCheck, ...], prefix: str = ""
) -> None:
    for key, integer, minimum, exclusive in checks:
        value = config[key]
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(
                f"{prefix}{key} must be {'an integer' if integer else 'a number'}, got {value!r}"
            )
        if value < minimum or (exclusive and value == minimum):
            bound = "positive" if exclusive else "non-negative"
            raise ValueError(f"{prefix}{key} must be {bound}, got {value!r}")


def _validate(config: dict[str, Any], *, need_aggregation: bool) -> None:
    if config["dataset"] not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {config['dataset']!r}")
    if need_aggregation and config["aggregation"] not in AGGREGATIONS:
        raise ValueError(
            f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {config['aggregation']!r}"
        )
    _check_numbers(config, _NUMBERS)
    _check_numbers(config["eval"], _EVAL_NUMBERS, prefix="eval.")
    if config["max_steps"] is not None:
        _check_numbers(config, (("max_steps", True, 0, False),))
    if config["device"] not in ("cpu", "cuda") or (
        config["device"] == "cuda" and not torch.cuda.is_available()
    ):
        raise ValueError(f"device must be cpu or an available cuda, got {config['device']!r}")


def check_run_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber: an existing run folder needs ``--overwrite`` or ``--resume``."""
    if resume:
        if not (run_dir / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"no {CHECKPOINT_FILE} to resume in {run_dir}")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise ValueError(
                f"run folder {run_dir} already exists; pass --overwrite to replace it or "
                "--resume to continue it"
            )
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(f"refusing to overwrite {run_dir}: it is not a run folder")


@dataclass
class TrainState:
    """Where training stands; everything needed to continue it exactly."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    step: int = 0
    step_losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)


def save_checkpoint(
    path: Path,
    model: MultimodalVAE,
    optimiser: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
) -> None:
    """Write the checkpoint atomically (a crash never leaves a half-written file)."""
    checkpoint = {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "state": asdict(state),
        "rng": {"torch": torch.get_rng_state(), "cuda": _cuda_rng_states()},
        "config": config,
    }
    partial = path.with_suffix(".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def _cuda_rng_states() -> list[torch.Tensor]:
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def load_checkpoint(
    path: Path, model: MultimodalVAE, optimiser: torch.optim.Optimizer, config: dict[str, Any]
) -> TrainState:
    """Restore model, optimiser and RNG states from ``path``.

    Raises
    ------
    ValueError
        If the file is damaged or comes from a run with another configuration.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from error
    saved = checkpoint["config"]
    differing = sorted(
        key for key in DEFAULTS if key not in RESUMABLE_CHANGES and saved.get(key) != config[key]
    )
    if differing:
        details = ", ".join(f"{key}: {saved.get(key)!r} vs {config[key]!r}" for key in differing)
        raise ValueError(f"checkpoint {path} comes from another configuration ({details})")
    model.load_state_dict(checkpoint["model"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    return TrainState(**checkpoint["state"])


def _epoch_loader(dataset: MultimodalDataset, config: dict[str, Any], epoch: int) -> DataLoader:
    """The data order of ``epoch`` depends only on the seed and the epoch: resumable."""
    seed = int(np.random.SeedSequence([config["seed"], epoch]).generate_state(1)[0])
    return DataLoader(
        dataset,
        batch_size=config["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=config["num_workers"],
    )


@torch.no_grad()
def test_loss(model: MultimodalVAE, dataset: MultimodalDataset, config: dict[str, Any]) -> float:
    """Mean negative ELBO on at most ``eval.max_test_loss_samples`` points (the per-epoch
    test loss), leaving the RNG as is."""
    device = next(model.parameters()).device
    subset = Subset(dataset, range(min(len(dataset), config["eval"]["max_test_loss_samples"])))
    model.eval()
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config["seed"])
        for xs, _ in DataLoader(subset, batch_size=config["batch_size"]):
            loss, _ = elbo_loss(
                model,
                [x.to(device) for x in xs],
                beta=config["beta"],
                all_components=config["reconstruct_all_components"],
            )
            total += loss.item() * len(xs[0])
    return total / len(subset)


def train(
    model: MultimodalVAE,
    optimiser: torch.optim.Optimizer,
    state: TrainState,
    train_set: MultimodalDataset,
    test_set: MultimodalDataset,
    config: dict[str, Any],
    run_dir: Path,
) -> None:
    """Train until ``epochs`` or ``max_steps``, checkpointing every epoch and at the stop."""
    device = next(model.parameters()).device
    max_steps = config["max_steps"]
    while state.epoch < config["epochs"] and (max_steps is None or state.step < max_steps):
        loader = _epoch_loader(train_set, config, state.epoch)
        batches = itertools.islice(loader, state.batch_in_epoch, None)
        progress = tqdm(
            batches,
            total=len(loader) - state.batch_in_epoch,
            desc=f"epoch {state.epoch + 1}/{config['epochs']}",
            leave=False,
        )
        model.train()
        for xs, _ in progress:
            loss, terms = elbo_loss(
                model,
                [x.to(device) for x in xs],
                beta=config["beta"],
                all_components=config["reconstruct_all_components"],
            )
            if not torch.isfinite(loss):
                raise ValueError(
                    f"training diverged (loss {loss.item()}) at step {state.step}; "
                    "try a smaller --lr"
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            state.step += 1
            state.batch_in_epoch += 1
            state.step_losses.append(loss.item())
            progress.set_postfix(loss=f"{loss.item():.2f}", kl=f"{terms['kl'].item():.2f}")
            if max_steps is not None and state.step >= max_steps:
                break
        if state.batch_in_epoch == len(loader):
            epoch_losses = state.step_losses[state.step - state.batch_in_epoch :]
            state.history.append(
                {
                    "epoch": state.epoch + 1,
                    "step": state.step,
                    "train_loss": float(np.mean(epoch_losses)),
                    "test_loss": test_loss(model, test_set, config),
                }
            )
            tqdm.write(
                "epoch {epoch}: train loss {train_loss:.3f}, test loss {test_loss:.3f}".format(
                    **state.history[-1]
                )
            )
            state.epoch += 1
            state.batch_in_epoch = 0
        save_checkpoint(run_dir / CHECKPOINT_FILE, model, optimiser, state, config)


def write_metrics(
    run_dir: Path,
    state: TrainState,
    table: Table,
    classifier_accuracy: dict[str, float],
    wall_time: float,
) -> None:
    """``metrics.json`` (everything) and ``metrics.csv`` (tidy: one value per row)."""
    metrics = {
        "history": state.history,
        "step_losses": state.step_losses,
        "eval": table,
        "classifier_accuracy": classifier_accuracy,
        "wall_time_s": wall_time,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["section", "epoch", "metric", "num_inputs", "value"])
        for record in state.history:
            for metric in ("train_loss", "test_loss"):
                writer.writerow(["history", record["epoch"], metric, "", record[metric]])
        for metric, row in table.items():
            for k, value in row.items():
                writer.writerow(["eval", "", metric, k, value])
        for name, value in classifier_accuracy.items():
            writer.writerow(["classifier_accuracy", "", name, "", value])


def weighted_specs(
    specs: Sequence[ModalitySpec], weights: dict[str, float] | None
) -> tuple[ModalitySpec, ...]:
    """``specs`` with the likelihood weights of ``weights`` (modality name → weight).

    A config's ``likelihood_weights`` replaces the dataset's (MoPoE's ``rec_weights``) for the
    modalities it names; the training loss multiplies each modality's log-likelihood by it.

    Raises
    ------
    ValueError
        When ``weights`` names an unknown modality or gives a weight that is not positive.
    """
    weights = dict(weights or {})
    names = [spec.name for spec in specs]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"likelihood_weights names unknown modalities {unknown}; known: {names}")
    return tuple(replace(spec, weight=float(weights.get(spec.name, spec.weight))) for spec in specs)


def _load_datasets(config: dict[str, Any]) -> tuple[MultimodalDataset, MultimodalDataset]:
    return tuple(
        get_dataset(config["dataset"], split, config["data_root"]) for split in ("train", "test")
    )


def _run_classifiers_only(config: dict[str, Any], path: Path, overwrite: bool) -> int:
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; pass --overwrite to retrain the classifiers")
    train_set, _ = _load_datasets(config)
    classifiers = train_classifiers(
        train_set,
        epochs=config["eval"]["classifier_epochs"],
        seed=config["seed"],
        device=config["device"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_classifiers(classifiers, train_set, path)
    print(f"classifiers for {config['dataset']} saved to {path}")
    return 0


def _available_cpus() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run(args: argparse.Namespace) -> int:
    """Train, evaluate, plot and report one run; see :func:`main`."""
    start = time.perf_counter()
    config, run_dir = resolve_config(args)
    classifiers_path = args.classifiers or run_dir / CLASSIFIERS_FILE
    if args.train_classifiers:
        return _run_classifiers_only(config, classifiers_path, args.overwrite)
    check_run_dir(run_dir, overwrite=args.overwrite, resume=args.resume)
    torch.set_num_threads(config["threads"] or _available_cpus())
    train_set, test_set = _load_datasets(config)
    torch.manual_seed(config["seed"])
    device = torch.device(config["device"])
    model = MultimodalVAE(
        weighted_specs(train_set.specs, config["likelihood_weights"]),
        config["latent_dim"],
        config["aggregation"],
        config["likelihoods"],
    ).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])
    if args.resume:
        state = load_checkpoint(run_dir / CHECKPOINT_FILE, model, optimiser, config)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        state = TrainState()
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    train(model, optimiser, state, train_set, test_set, config, run_dir)
    eval_config = config["eval"]
    classifiers = load_or_train_classifiers(
        classifiers_path,
        train_set,
        epochs=eval_config["classifier_epochs"],
        seed=config["seed"],
        device=device,
    )
    table = evaluation_table(
        model,
        train_set,
        test_set,
        classifiers,
        num_importance_samples=eval_config["num_importance_samples"],
        max_eval_samples=eval_config["max_eval_samples"],
        max_log_likelihood_samples=eval_config["max_log_likelihood_samples"],
        batch_size=config["batch_size"],
        seed=config["seed"],
    )
    real = EvalSplit.sample(test_set, eval_config["max_eval_samples"], config["seed"], device)
    accuracies = dict(
        zip(
            (spec.name for spec in test_set.specs),
            classifier_accuracies(classifiers, real.xs, real.labels, config["batch_size"]),
            strict=True,
        )
    )
    examples = EvalSplit.sample(test_set, FIGURE_SAMPLES, config["seed"], device).xs
    save_reconstructions(model, examples, run_dir / "reconstructions.png")
    save_conditional_generations(model, examples, run_dir / "conditional_generations.png")
    if any(spec.kind == "text" for spec in model.specs):
        save_text_generations(model, examples, run_dir / "text_generations.png", ALPHABET)
    save_metric_curves(state.step_losses, state.history, table, run_dir / "metrics.png")
    write_metrics(run_dir, state, table, accuracies, time.perf_counter() - start)
    print(
        f"{config['aggregation']} on {config['dataset']}, {state.step} steps, run folder {run_dir}"
    )
    print(format_table(table))
    print(
        "coherence classifiers' accuracy on real test data: "
        + ", ".join(f"{name} {value:.3f}" for name, value in accuracies.items())
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; 0 on success, 2 with a one-line message on bad input."""
    try:
        return run(build_parser().parse_args(argv))
    except (ValueError, FileNotFoundError) as error:
        message = " ".join(str(error).split())  # one line, whatever the source
        print(f"train.py: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
