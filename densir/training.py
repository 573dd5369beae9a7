"""The training runner both model families share: :class:`DensirTrainer` and :func:`run_training`.

:class:`DensirTrainer` is a ``transformers.Trainer`` for any model with ``save(dir)`` and
``load_weights(dir)`` (the bi-encoder, the cross-encoder re-ranker). It owns:

- saving: checkpoints and the final model go through ``model.save`` (safetensors + the model's
  own config; no pickled model). HF's optimizer/scheduler/RNG state files sit beside it in
  ``checkpoint-N/`` so a run can resume;
- resume: ``resume_checkpoint(output_dir, "auto")`` finds the latest complete checkpoint; HF
  restores weights (through ``load_weights``), optimizer, scheduler, RNG and step count;
- data position: the train sampler is :class:`densir.dataset.EpochShuffleSampler`, a function of
  ``(seed, epoch)``, and a callback tells it the epoch before each one, so after HF skips the
  batches already seen the resumed run gets exactly the batches of an uninterrupted one. A
  dataset for it maps an index ``epoch * len + i`` to its item (see :class:`densir.dataset.TrainDataset`);
- validation: a :class:`densir.validation.Validator` passed as ``validator=`` (as
  sentence-transformers passes ``evaluator=``; :class:`densir.validation.RetrievalValidator`,
  :class:`densir.reranker.validation.RerankValidator`) is what :meth:`DensirTrainer.evaluate`
  runs every ``eval_steps``; ``load_best_model_at_end`` reloads the best checkpoint through
  ``load_weights``.

:func:`run_training` is the one build-and-train path of both families: validator, model, loss,
collator and trainer from the family's trainer class (:class:`densir.retriever.trainer.DenseTrainer`,
:class:`densir.reranker.trainer.RerankerTrainer`: its ``build_*`` hooks), then resume, seed,
train, save, summary.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainerCallback

from densir.dataset import EpochShuffleSampler
from densir.io import ParameterError
from densir.precision import precision_from_flags, resolve_precision

if TYPE_CHECKING:
    from densir.validation import Validator

logger = logging.getLogger(__name__)

TRAINING_ARGS_JSON = "training_args.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def resume_checkpoint(output_dir, resume_from_checkpoint: str | None) -> str | None:
    """``"auto"`` (or ``"true"``, HF's spelling) -> the latest complete ``checkpoint-N`` in
    ``output_dir``, None if there is none; a path -> that path, which must be a complete
    checkpoint; None/""/"false" -> None.

    A checkpoint is complete when it holds ``trainer_state.json`` (HF writes it after the model,
    optimizer and RNG files); a half-written one left by a crash is skipped with a warning.
    """
    if resume_from_checkpoint in (None, "", "false", "False", "no"):
        return None
    if str(resume_from_checkpoint).lower() not in ("auto", "true"):
        if not Path(resume_from_checkpoint, "trainer_state.json").is_file():
            raise FileNotFoundError(f"{resume_from_checkpoint}: not a complete checkpoint (no trainer_state.json)")
        return str(resume_from_checkpoint)
    found = []
    if Path(output_dir).is_dir():
        for d in Path(output_dir).iterdir():
            m = _CHECKPOINT.match(d.name)
            if m and d.is_dir():
                if (d / "trainer_state.json").is_file():
                    found.append((int(m.group(1)), d))
                else:
                    logger.warning("ignoring incomplete checkpoint %s (no trainer_state.json)", d)
    if not found:
        logger.info("--resume_from_checkpoint %s: no checkpoint in %s, starting afresh", resume_from_checkpoint,
                    output_dir)
        return None
    latest = str(max(found)[1])
    logger.info("--resume_from_checkpoint %s: resuming from %s", resume_from_checkpoint, latest)
    return latest


class _SamplerEpoch(TrainerCallback):
    """Tells the train sampler its epoch before each one (also after a resume, mid-epoch)."""

    def __init__(self, trainer: "DensirTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler = self.trainer.epoch_sampler
        if sampler is not None:
            # state.epoch is epochs done as a float: exact at an epoch boundary, and a resumed
            # run restores it from trainer_state.json, so the floor is the epoch about to run
            sampler.set_epoch(int(math.floor(state.epoch + 1e-6)))


class DensirTrainer(Trainer):
    """A ``transformers.Trainer`` for densir models; see the module docstring.

    ``loss_fn``: the objective (default: ``build_loss(args)``); ``validator``: a
    :class:`densir.validation.Validator` run at every evaluation, or None. A family subclasses it
    with ``compute_loss`` and the static hooks :func:`run_training` builds a run from:
    ``build_loss(training_args)``, ``build_model(model_args, data_args)``, ``build_collator(model,
    data_args, loss_fn)``, ``build_validator(data_args, training_args)``.
    """

    eval_inputs: tuple[str, ...] = ("eval_queries", "eval_qrels")  # the data parameters that ask for validation
    summary_fields: tuple[str, ...] = ()  # training parameters train_summary.json repeats (the re-ranker's loss)

    def __init__(self, *args, loss_fn: nn.Module | None = None, validator: Validator | None = None, **kwargs):
        args_ = kwargs.get("args", args[1] if len(args) > 1 else None)
        if args_ is not None and args_.load_best_model_at_end and validator is None:
            raise ParameterError("`load_best_model_at_end` needs validation during training (a validator: "
                                 f"{', '.join(f'`{name}`' for name in self.eval_inputs)} with `eval_strategy` steps)")
        if validator is not None:
            kwargs.setdefault("eval_dataset", ())  # a stand-in: HF refuses an eval_strategy without an eval set
        super().__init__(*args, **kwargs)
        if validator is not None:
            self.eval_dataset = None
        self.validator = validator
        self.loss_fn = loss_fn if loss_fn is not None else self.build_loss(self.args)
        # densir losses are batch means computed here, never by the model from `labels`
        self.model_accepts_loss_kwargs = False
        self.epoch_sampler: EpochShuffleSampler | None = None
        self.add_callback(_SamplerEpoch(self))

    def training_step(self, model, inputs, num_items_in_batch=None):
        """With ``grad_cache``: the family's ``chunked_step`` (the batch in chunks of bounded memory, the
        whole batch's gradients), scaled as HF scales a step's loss (1 / gradient-accumulation steps)."""
        if not self.args.grad_cache:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        return self.chunked_step(model, self._prepare_inputs(inputs), backward=self.accelerator.backward,
                                 no_sync=lambda: self.accelerator.no_sync(model),
                                 scale=1.0 / self.current_gradient_accumulation_steps)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Metrics of the model as it is now from the validator, logged as ``eval_nDCG@10`` etc.

        Rank 0 evaluates (every rank holds the same weights), every rank gets the metrics, so HF's
        best-model bookkeeping (``--load_best_model_at_end``) agrees everywhere.
        """
        if self.validator is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        metrics = None
        if self.is_world_process_zero():
            device = self.args.device
            precision = resolve_precision(precision_from_flags(self.args.fp16, self.args.bf16), device).name
            model = self.accelerator.unwrap_model(self.model)
            metrics = {f"{metric_key_prefix}_{k}": v
                       for k, v in self.validator.evaluate(model, device, precision).items()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            box = [metrics]
            dist.broadcast_object_list(box, src=0, device=self.args.device if self.args.device.type == "cuda" else None)
            metrics = box[0]
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self.epoch_sampler = EpochShuffleSampler(len(dataset), seed=seed)
        return self.epoch_sampler

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        logger.info("saving model to %s", output_dir)
        self.accelerator.unwrap_model(self.model).save(output_dir)
        # JSON instead of HF's pickled training_args.bin: no artefact of ours executes code on load
        with open(os.path.join(output_dir, TRAINING_ARGS_JSON), "w") as f:
            f.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        logger.info("loading weights from %s", resume_from_checkpoint)
        self.accelerator.unwrap_model(model if model is not None else self.model).load_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        """``--load_best_model_at_end``: the best checkpoint's weights, through ``model.load_weights``
        (HF's own loader expects a PreTrainedModel's state-dict names in ``model.safetensors``)."""
        logger.info("loading the best model, %s (%s %s)", self.state.best_model_checkpoint,
                    self.args.metric_for_best_model, self.state.best_metric)
        self._load_from_checkpoint(self.state.best_model_checkpoint)


# --------------------------------------------------------------------------- the run's loss and its last step
class LogAtSavesCallback(TrainerCallback):
    """Log the loss at every checkpoint and at the last step too, so the log history (which a
    checkpoint carries) covers every step: :func:`history_loss` is then exact, resumed or not.
    With checkpoints on, the last step is saved too: a rerun of a finished training resumes from
    it, trains nothing and keeps the run's summary (:func:`run_training`)."""

    def on_step_end(self, args, state, control, **kwargs):
        last = state.global_step >= state.max_steps
        if last and args.save_strategy != "no":
            control.should_save = True
        if control.should_save or last:
            control.should_log = True
        return control


def history_loss(log_history: list[dict]) -> float | None:
    """The mean training loss over the logged steps: each logged ``loss`` (the mean since the
    previous log) weighted by the steps it covers."""
    total, steps, last = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            span = int(entry["step"]) - last
            total += float(entry["loss"]) * span
            steps += span
            last = int(entry["step"])
    return total / steps if steps else None


def _finished(checkpoint, training_args) -> bool:
    """Whether ``checkpoint`` is the last step of the training ``training_args`` plan (the same
    --max_steps, or the same --num_train_epochs without one)."""
    import json

    try:
        state = json.loads(Path(checkpoint, "trainer_state.json").read_text(encoding="utf-8"))
        done, planned = int(state["global_step"]), int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    same_plan = (training_args.max_steps == planned if training_args.max_steps > 0
                 else training_args.num_train_epochs == state.get("num_train_epochs"))
    return same_plan and done >= planned


# --------------------------------------------------------------------------- logging
def setup_logging(training_args) -> None:
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, stream=sys.stderr)
    logging.getLogger("densir").setLevel(level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- the one runner
def validator_for(trainer_class: type[DensirTrainer], data_args, training_args) -> Validator | None:
    """The family's validator when the data parameters ask for one (``trainer_class.eval_inputs``)
    and ``eval_strategy`` is steps or epoch; None when neither; one without the other is a ParameterError."""
    strategy = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy))
    inputs = ", ".join(f"`{name}`" for name in trainer_class.eval_inputs)
    if not data_args.eval_queries:
        if strategy != "no":
            raise ParameterError(f"`eval_strategy` {strategy} needs {inputs}")
        return None
    if strategy == "no":
        raise ParameterError(f"{inputs} need `eval_strategy` steps (and `eval_steps` N) or epoch")
    return trainer_class.build_validator(data_args, training_args)


def run_training(trainer_class: type[DensirTrainer], model_args, data_args, training_args,
                 callbacks: list | None = None) -> dict:
    """The one training run of both families: build, resume, seed, train, save, summarise.

    The validator is built first (bad eval files fail before the model loads), then, after
    :func:`transformers.set_seed` (so anything drawn at random while building, a re-ranker's
    fresh head, is a function of ``seed`` and a bash run equals its SLURM twin), the family's
    model, loss, collator and trainer (``trainer_class.build_*``) over a
    :class:`densir.dataset.TrainDataset` of the train groups. The summary's ``train_loss`` is the
    mean loss of every step, from the log history (:func:`history_loss`: a resumed run reports what
    the uninterrupted run reports); rank 0 writes ``train_summary.json`` atomically and prints one
    line; ``--lora_merge`` writes ``<output_dir>/merged`` before (:func:`densir.lora.save_merged`). A
    rerun of a finished training (its last checkpoint is the plan's last step) returns the
    summary as it was, building and training nothing.
    """
    from transformers import set_seed

    from densir.dataset import TrainDataset
    from densir.formats import train_group_source
    from densir.io import write_json
    from densir.threads import configure_cpu_threads

    validator = validator_for(trainer_class, data_args, training_args)
    resume = resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    if training_args.device.type == "cpu":
        configure_cpu_threads()
    summary_path = Path(training_args.output_dir) / "train_summary.json"
    if resume is not None and summary_path.is_file() and _finished(resume, training_args):
        # a rerun of a finished training: the model and its summary stand as they are (HF would
        # train one more step when the last checkpoint falls inside an epoch)
        from densir.io import read_json

        logger.info("%s: training is complete (%s is its last step); %s kept", training_args.output_dir, resume,
                    summary_path)
        return read_json(summary_path)
    set_seed(training_args.seed)
    model = trainer_class.build_model(model_args, data_args)
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    dataset = TrainDataset(train_group_source(data_args), data_args.train_n_passages, seed=seed)
    loss_fn = trainer_class.build_loss(training_args)
    trainer = trainer_class(model=model, args=training_args, train_dataset=dataset, loss_fn=loss_fn,
                            data_collator=trainer_class.build_collator(model, data_args, loss_fn),
                            validator=validator, callbacks=callbacks)
    trainer.add_callback(LogAtSavesCallback())
    extra = {name: getattr(training_args, name) for name in trainer_class.summary_fields}
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    if model_args.lora and model_args.lora_merge and training_args.should_save:  # before the summary marks it done
        from densir.lora import save_merged

        save_merged(type(model).load, training_args.output_dir)
    # the mean loss of every step of the run, from the log history (restored from the checkpoint on
    # a resume, so a resumed run reports what the uninterrupted run reports; HF's training_loss
    # covers only the steps of this call). The logged losses are already means over the ranks.
    train_loss = history_loss(trainer.state.log_history)
    summary = {"global_step": result.global_step, "train_loss": train_loss, **extra,
               "train_seconds": round(time.time() - start, 1), "queries": len(dataset),
               "resumed_from": resume, "skipped": dataset.stats,
               "log_history": [h for h in trainer.state.log_history if "loss" in h]}
    evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    if evals:  # validation during training: every evaluation, and the one the final model is
        summary["eval_history"] = evals
        summary["best_model_checkpoint"] = trainer.state.best_model_checkpoint
        summary["best_metric"] = trainer.state.best_metric
        summary["final_model_is"] = (trainer.state.best_model_checkpoint if training_args.load_best_model_at_end
                                     and trainer.state.best_model_checkpoint else f"step {result.global_step}")
    if trainer.is_world_process_zero():
        write_json(Path(training_args.output_dir) / "train_summary.json", summary)
        what = f"{extra['loss']} " if "loss" in extra else ""
        print(f"trained {result.global_step} steps in {summary['train_seconds']} s, "
              f"{what}loss {'-' if train_loss is None else f'{train_loss:.4f}'} -> {training_args.output_dir}")
    return summary
