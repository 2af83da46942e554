"""Lightning module for the SMILES VAE: ELBO training with a KL warm-up and the teacher-forced reconstruction
accuracy (the decoding metrics, validity / uniqueness / novelty of generated strings, are an evaluator's:
:class:`hsvae.evaluation.molecules.MoleculeMetrics`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hsvae.data.smiles import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SMILESDataModule, SMILESTokenizer
from hsvae.models.smiles import SMILESVAE

from .epoch_means import EpochMeans
from .task import ELBOTask


#: under ``trainer.fast_dev_run`` (a smoke test, which on a CPU would spend minutes on full batches of a 4+4-layer
#: Transformer): strings per batch, at most
FAST_DEV_RUN_ROWS = 16


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
    The decoding metrics (``test/char_accuracy``, ``test/prior_valid``, ...) are the ``molecules`` evaluator's
    (``conf/evaluation/molecules.yaml``).

    Args:
        net: a :class:`SMILESVAE` or a partial constructor of one (see above).
        optimizer, scheduler, warmup_epochs, final_beta: as :class:`ELBOTask` (``final_beta``: 0.015 in the
            spherical-Cauchy paper's setup).
    """

    def __init__(
        self,
        net: SMILESVAE | Callable[..., SMILESVAE],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        warmup_epochs: float = 0.0,
        final_beta: float = 1.0,
    ):
        super().__init__(net if isinstance(net, nn.Module) else None, optimizer, scheduler, warmup_epochs, final_beta)
        self.net_factory = None if isinstance(net, nn.Module) else net
        self.tokenizer: SMILESTokenizer | None = None
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
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, SMILESDataModule):
            raise ValueError(
                "model=smiles_vae trains on a SMILES data module (dataset=zinc250k); "
                f"got {type(datamodule).__name__}"
            )
        datamodule.setup(stage)
        if self.tokenizer is not None and datamodule.tokenizer != self.tokenizer:
            raise ValueError("the data's vocabulary differs from the one this model was built with")
        self._build(datamodule.tokenizer, datamodule.max_length)

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

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
