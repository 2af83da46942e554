"""Lightning module for the SMILES VAE: ELBO training with a KL warm-up, teacher-forced and decoded
reconstruction accuracy, and the validity / uniqueness / novelty of strings generated from the prior."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hsvae.data.smiles import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SMILESDataModule, SMILESTokenizer
from hsvae.evaluation import molecules
from hsvae.models.smiles import SMILESVAE
from hsvae.utils.progress import PhaseProgress

from .epoch_means import EpochMeans
from .task import ELBOTask


#: under ``trainer.fast_dev_run`` (a smoke test, which on a CPU would spend minutes on full batches of a 4+4-layer
#: Transformer): strings per batch, and generated strings (prior samples and reconstructions, each), at most
FAST_DEV_RUN_ROWS = 16
FAST_DEV_RUN_DECODES = 8


class SMILESVAEModule(ELBOTask):
    """Trains a :class:`~hsvae.models.SMILESVAE` on the ``(ids, lengths)`` batches of a
    :class:`~hsvae.data.SMILESDataModule`.

    The network is built in :meth:`setup`, once the data's vocabulary and longest string are known (``net`` is
    then a partial constructor taking ``vocab_size``, ``max_length`` and the special ids). Checkpoints store the
    vocabulary, so a checkpoint is only ever used with the tokenisation it was trained on.

    Logged (per molecule, in nats): ``{train,val,test}/{elbo,reconstruction,kl,token_accuracy}`` (the accuracy
    teacher-forced: the next token given the true prefix), ``{train,val,test}/objective`` = reconstruction -
    ``final_beta`` KL (the training objective after the warm-up, what the zinc250k config selects checkpoints
    by: with beta << 1 the ELBO peaks early and would pick an under-trained model), ``train/{loss,beta}``.
    At the end of testing (and every ``decode_every_n_epochs`` validation epochs): ``<stage>/char_accuracy`` and
    ``<stage>/string_accuracy`` of greedy decodings from the posterior locations of the first
    ``n_reconstructions`` strings of the split (see :func:`hsvae.evaluation.molecules.reconstruction_counts`),
    and for ``n_samples`` strings decoded greedily from prior samples ``<stage>/prior_{unique,novel}`` and, with RDKit, ``<stage>/prior_{valid,unique_valid,
    novel_valid}``; ``test/unknown_strings``: test strings with a token outside the training vocabulary.

    Args:
        net: a :class:`SMILESVAE` or a partial constructor of one (see above).
        optimizer: a partial ``torch.optim`` constructor (``optimizer(params=...)``).
        scheduler: optional partial LR scheduler constructor; ``ReduceLROnPlateau`` monitors ``val/elbo``.
        warmup_epochs: the KL weight beta rises linearly from 0 to ``final_beta`` over this many epochs.
        final_beta: the KL weight after the warm-up (0.015 in the spherical-Cauchy paper's setup).
        n_samples: prior samples decoded for the generation metrics (0: none).
        n_reconstructions: strings of the split decoded for the reconstruction accuracies (0: none).
        decode_every_n_epochs: also compute the decoding metrics on the validation split every this many epochs
            (0: only at test time; decoding costs O(L^2) decoder passes per string).
        decode_batch_size: strings decoded at once. (The decoding shows its progress, with an ETA, on a terminal.)
        greedy: decode prior samples greedily (else sample at ``temperature``); reconstructions are always greedy.
        temperature: softmax temperature of sampled decoding.
    """

    def __init__(
        self,
        net: SMILESVAE | Callable[..., SMILESVAE],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        warmup_epochs: float = 0.0,
        final_beta: float = 1.0,
        n_samples: int = 1000,
        n_reconstructions: int = 1000,
        decode_every_n_epochs: int = 0,
        decode_batch_size: int = 500,
        greedy: bool = True,
        temperature: float = 1.0,
    ):
        for name, value, low in (("n_samples", n_samples, 0), ("n_reconstructions", n_reconstructions, 0),
                                 ("decode_every_n_epochs", decode_every_n_epochs, 0),
                                 ("decode_batch_size", decode_batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        super().__init__(net if isinstance(net, nn.Module) else None, optimizer, scheduler, warmup_epochs, final_beta)
        self.net_factory = None if isinstance(net, nn.Module) else net
        self.tokenizer: SMILESTokenizer | None = None
        self._training_smiles: set[str] = set()
        self._is_valid: Callable[[str], bool] | None = None
        self._validity_checked = False
        self._eval_stats = {"val": EpochMeans(), "test": EpochMeans()}

    # -- building the network from the data ----------------------------------------------------------------
    def _build(self, tokenizer: SMILESTokenizer, max_length: int) -> None:
        if self.net is None:
            if self.net_factory is None:
                raise ValueError("SMILESVAEModule has neither a network nor a constructor for one")
            self.net = self.net_factory(vocab_size=tokenizer.vocab_size, max_length=max_length, pad_id=PAD_ID,
                                        bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID)
        elif self.net.vocab_size != tokenizer.vocab_size or self.net.max_length < max_length:
            raise ValueError(
                f"the network was built for {self.net.vocab_size} tokens and strings of up to {self.net.max_length} "
                f"tokens; the data has {tokenizer.vocab_size} tokens and strings of up to {max_length}"
            )
        self.tokenizer = tokenizer

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, SMILESDataModule):
            raise ValueError(
                "model=smiles_vae trains on a SMILES data module (dataset=zinc250k); "
                f"got {type(datamodule).__name__}"
            )
        datamodule.setup(stage)
        if self.tokenizer is not None and datamodule.tokenizer != self.tokenizer:
            raise ValueError("the data's vocabulary differs from the one this model was built with")
        self._build(datamodule.tokenizer, datamodule.max_length)
        self._training_smiles = set(datamodule.smiles["train"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["smiles_vocabulary"] = list(self.tokenizer.tokens)
        checkpoint["smiles_max_length"] = self.net.max_length

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        tokens = checkpoint.get("smiles_vocabulary")
        if tokens is None:
            raise ValueError("this checkpoint has no SMILES vocabulary: it was not written by SMILESVAEModule")
        saved = SMILESTokenizer(tokens)
        if self.tokenizer is not None and saved != self.tokenizer:
            raise ValueError(
                f"the checkpoint's vocabulary ({saved.vocab_size} tokens) differs from the data's "
                f"({self.tokenizer.vocab_size} tokens): a different SMILES file or split_seed than in training"
            )
        self._build(saved, checkpoint["smiles_max_length"])

    # -- steps ---------------------------------------------------------------------------------------------
    def _tokens(self, batch) -> torch.Tensor:
        """A loader batch's token ids (the loader already dropped the padding columns beyond its longest string,
        on the host); under ``fast_dev_run``, only the first ``FAST_DEV_RUN_ROWS`` strings."""
        tokens = batch[0]
        if self._trainer is not None and self.trainer.fast_dev_run:
            tokens = tokens[:FAST_DEV_RUN_ROWS]
        return tokens.long()

    @staticmethod
    def _trim(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Rows of a split, without the padding columns beyond their longest string (for decoding; one host read)."""
        return tokens[:, : int(lengths.max())].long()

    @staticmethod
    def _statistics(terms, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """A batch's means per string (the token counts too, so that the epoch's token accuracy is the ratio of
        the sums)."""
        mask = terms.targets != PAD_ID
        correct = ((terms.logits.argmax(-1) == terms.targets) & mask).sum()
        n = terms.reconstruction.shape[0]
        return {"loss": loss, "reconstruction": terms.reconstruction.mean(), "kl": terms.kl.mean(),
                "correct": correct.float() / n, "tokens": mask.sum().float() / n}

    def _metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An epoch's ELBO, its parts, the objective and the token accuracy."""
        rec, kl = means["reconstruction"], means["kl"]
        return {"elbo": rec - kl, "reconstruction": rec, "kl": kl, "objective": rec - self.final_beta * kl,
                "token_accuracy": means["correct"] / means["tokens"].clamp_min(1e-12)}

    def epoch_metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        return {**self._metrics(means), "loss": means["loss"],
                "beta": self.beta(int(self.trainer.num_training_batches))}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        tokens = self._tokens(batch)
        terms = self.net(tokens)
        beta = self.beta(batch_idx)
        loss = terms.loss(beta)
        statistics = self._statistics(terms, loss)
        correct, count = statistics.pop("correct"), statistics.pop("tokens")
        self.observe(statistics, batch_idx, weight=tokens.shape[0], extra={"correct": correct, "tokens": count},
                     beta=beta)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        terms = self.net(self._tokens(batch))
        self._eval_stats[stage].add(self._statistics(terms, terms.loss(1.0)), weight=terms.reconstruction.shape[0])

    def _log_eval(self, stage: str) -> None:
        means = self._eval_stats[stage].means()
        self._eval_stats[stage].reset()
        if means:
            self.log_dict({f"{stage}/{k}": v for k, v in self._metrics(means).items()}, prog_bar=stage == "val",
                          sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")
        every = self.hparams.decode_every_n_epochs
        if every > 0 and not self.trainer.sanity_checking and (self.current_epoch + 1) % every == 0:
            self.log_dict(self.decoding_metrics("val", "val"), sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        metrics = self.decoding_metrics("test", "test")
        datamodule = self.trainer.datamodule
        metrics["test/unknown_strings"] = float(datamodule.unknown_strings.get("test", 0))
        self.log_dict(metrics, sync_dist=True)

    # -- decoding metrics -----------------------------------------------------------------------------------
    def _limit(self, n: int) -> int:
        return min(n, FAST_DEV_RUN_DECODES) if self.trainer.fast_dev_run else n

    def validity_checker(self) -> Callable[[str], bool] | None:
        """RDKit's validity check, looked up once per module (one warning line when RDKit is missing)."""
        if not self._validity_checked:
            self._is_valid = molecules.rdkit_validity()
            self._validity_checked = True
        return self._is_valid

    def decoding_metrics(self, split: str, stage: str) -> dict[str, float]:
        """Greedy reconstructions of the split's first strings and strings generated from the prior."""
        datamodule = self.trainer.datamodule
        data = datamodule.splits[split]
        size = self.hparams.decode_batch_size
        metrics: dict[str, float] = {}
        with self.evaluating():
            n = min(self._limit(self.hparams.n_reconstructions), len(data))
            if n > 0:
                correct = tokens = exact = 0
                with self._decoding_progress(f"decoding {n} reconstructions", n) as progress:
                    for lo in range(0, n, size):
                        hi = min(lo + size, n)  # the split's first n strings, no more
                        batch = self._trim(data.x[lo:hi].to(self.device), data.y[lo:hi])
                        predicted = self.net.generate(self.net.embed(batch), on_step=progress.stepper(lo, len(batch)))
                        c, t, e = molecules.reconstruction_counts(predicted, batch[:, 1:], PAD_ID)
                        correct, tokens, exact = correct + c, tokens + t, exact + e
                metrics[f"{stage}/char_accuracy"] = correct / max(tokens, 1)
                metrics[f"{stage}/string_accuracy"] = exact / n
            n = self._limit(self.hparams.n_samples)
            if n > 0:
                samples: list[str] = []
                with self._decoding_progress(f"decoding {n} prior samples", n) as progress:
                    for lo in range(0, n, size):
                        rows = min(size, n - lo)
                        z = self.net.latent.prior().sample((rows,))
                        ids = self.net.generate(z, greedy=self.hparams.greedy, temperature=self.hparams.temperature,
                                                on_step=progress.stepper(lo, rows))
                        samples += self.tokenizer.decode_batch(ids)
                quality = molecules.sample_metrics(samples, self._training_smiles, self.validity_checker())
                metrics.update({f"{stage}/prior_{k}": v for k, v in quality.items()})
                self._write_samples(samples, stage)
        return metrics

    def _decoding_progress(self, description: str, strings: int) -> _DecodingProgress:
        return _DecodingProgress(PhaseProgress(description, strings, trainer=self.trainer, unit="string"))

    def _write_samples(self, samples: list[str], stage: str) -> None:
        """The generated strings, one per line, in ``<output_dir>/smiles_samples_<stage>.txt`` (rank zero)."""
        root = getattr(self.trainer, "default_root_dir", None)
        if not root or not self.trainer.is_global_zero or self.trainer.fast_dev_run:
            return
        path = Path(root) / f"smiles_samples_{stage}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(samples) + "\n")


class _DecodingProgress:
    """A bar counting decoded strings, moved within a batch by :meth:`SMILESVAE.generate`'s ``on_step``."""

    def __init__(self, bar: PhaseProgress):
        self.bar = bar

    def stepper(self, done: int, rows: int) -> Callable[[float], None] | None:
        """``on_step`` for a batch of ``rows`` strings after ``done`` (None when nothing is displayed)."""
        if not self.bar.shown:
            return None
        return lambda fraction: self.bar.update(done + fraction * rows)

    def __enter__(self) -> _DecodingProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
