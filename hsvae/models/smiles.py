"""A Transformer VAE for SMILES strings (the spherical-Cauchy paper's molecule experiment), a plain ``nn.Module``.

Encoder: token + learned position embeddings -> Transformer encoder (pre-norm) -> mean over the non-padding
positions -> a linear head to the latent family's raw outputs -> posterior q(z | x).

Decoder: autoregressive, conditioned on z twice: z is projected to ``memory_tokens`` vectors that every
decoder layer cross-attends to, and a projection of z is added to every input embedding (a decoder that only
attends to z through cross-attention learns to ignore it more easily). Teacher forcing in training; greedy or
sampled decoding token by token for generation.

Shapes: token ids ``(B, L)`` are ``<bos> t_1 ... t_n <eos> <pad> ...`` (see :mod:`hsvae.data.smiles`); the
latent sample z is ``(B, event_size)``: d coordinates for a Gaussian latent, d + 1 for a spherical one on S^d.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.latents import LatentFamily

from .vae import ELBOTerms


@dataclass
class SequenceELBOTerms(ELBOTerms):
    """:class:`~hsvae.models.ELBOTerms` plus the teacher-forced logits ``(B, L - 1, V)`` and their targets."""

    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


class SMILESVAE(nn.Module):
    """Transformer encoder, latent family, autoregressive Transformer decoder.

    Args:
        latent: the latent family (any of :mod:`hsvae.latents`).
        vocab_size: number of token ids (from the data's tokenizer).
        max_length: tokens of the longest string, without ``<bos>``/``<eos>`` (from the data).
        embed_dim, num_heads, num_layers, ff_dim, dropout: Transformer sizes (256, 4, 4 in the paper's setup);
            ``num_layers`` for the encoder and the decoder each.
        memory_tokens: vectors z is projected to for the decoder's cross-attention.
        pad_id, bos_id, eos_id, unk_id: the special token ids.
    """

    def __init__(
        self,
        latent: LatentFamily,
        vocab_size: int,
        max_length: int,
        embed_dim: int = 256,
        num_heads: int = 4,
        num_layers: int = 4,
        ff_dim: int = 1024,
        dropout: float = 0.1,
        memory_tokens: int = 4,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        unk_id: int = 3,
    ):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("max_length", max_length), ("embed_dim", embed_dim),
                            ("num_heads", num_heads), ("num_layers", num_layers), ("ff_dim", ff_dim),
                            ("memory_tokens", memory_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SMILESVAE: {name} must be a positive integer, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"SMILESVAE: embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"SMILESVAE: dropout must lie in [0, 1), got {dropout!r}")
        specials = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id, "unk_id": unk_id}
        if len(set(specials.values())) != 4 or not all(0 <= v < vocab_size for v in specials.values()):
            raise ValueError(f"SMILESVAE: the special ids {specials} must be distinct ids below vocab_size={vocab_size}")
        self.latent = latent
        self.vocab_size, self.max_length = vocab_size, max_length
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = pad_id, bos_id, eos_id, unk_id
        self.embed_dim, self.memory_tokens = embed_dim, memory_tokens
        #: sequence positions: <bos>, max_length tokens, <eos>
        self.positions = max_length + 2

        self.token_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.encoder_positions = nn.Embedding(self.positions, embed_dim)
        self.decoder_positions = nn.Embedding(self.positions, embed_dim)

        def layer(kind):
            return kind(embed_dim, num_heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True)

        self.encoder = nn.TransformerEncoder(
            layer(nn.TransformerEncoderLayer), num_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )
        self.head = nn.Linear(embed_dim, latent.raw_size)
        self.latent_to_memory = nn.Linear(latent.event_size, memory_tokens * embed_dim)
        self.latent_to_input = nn.Linear(latent.event_size, embed_dim)
        self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), num_layers, norm=nn.LayerNorm(embed_dim))
        self.output = nn.Linear(embed_dim, vocab_size)

    # -- encoder -------------------------------------------------------------------------------------------
    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"SMILESVAE expects token ids of shape (B, L), got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.positions:
            raise ValueError(
                f"sequences of {tokens.shape[1]} positions exceed the model's {self.positions} "
                f"(max_length={self.max_length} tokens plus <bos> and <eos>)"
            )
        return tokens.long()

    def posterior(self, tokens: torch.Tensor) -> Distribution:
        tokens = self._check_tokens(tokens)
        padding = tokens == self.pad_id
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.token_embedding(tokens) + self.encoder_positions(positions)
        h = self.encoder(h, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.latent.posterior(self.head(pooled))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The posterior's location: the point used for reconstructions, interpolation and plots."""
        return self.latent.point(self.posterior(tokens))

    # -- decoder -------------------------------------------------------------------------------------------
    def _condition(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.dim() != 2 or z.shape[1] != self.latent.event_size:
            raise ValueError(f"z must have shape (B, {self.latent.event_size}), got {tuple(z.shape)}")
        memory = self.latent_to_memory(z).reshape(z.shape[0], self.memory_tokens, self.embed_dim)
        return memory, self.latent_to_input(z).unsqueeze(1)

    def _decode(self, inputs: torch.Tensor, memory: torch.Tensor, z_input: torch.Tensor) -> torch.Tensor:
        length = inputs.shape[1]
        positions = torch.arange(length, device=inputs.device)
        h = self.token_embedding(inputs) + self.decoder_positions(positions) + z_input
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=inputs.device, dtype=h.dtype)
        # Padding after <eos> needs no mask: under the causal mask no real token attends to a later position.
        h = self.decoder(h, memory, tgt_mask=causal, tgt_is_causal=True)
        return self.output(h)

    def decode_logits(self, z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` for decoder inputs ``(B, T)`` (teacher forcing) given z ``(B, event)``."""
        return self._decode(self._check_tokens(inputs), *self._condition(z))

    def reconstruction_log_prob(self, z: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(tokens | z) per sequence (B,), logits (B, L - 1, V))``: the sum over every position after
        ``<bos>`` up to and including ``<eos>``."""
        tokens = self._check_tokens(tokens)
        logits = self.decode_logits(z, tokens[:, :-1])
        targets = tokens[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=self.pad_id, reduction="none")
        return -nll.sum(1), logits

    def forward(self, tokens: torch.Tensor) -> SequenceELBOTerms:
        tokens = self._check_tokens(tokens)
        q = self.posterior(tokens)
        sample = self.latent.rsample(q)
        reconstruction, logits = self.reconstruction_log_prob(sample.z, tokens)
        return SequenceELBOTerms(reconstruction, self.latent.kl(q, sample), sample, q, logits, tokens[:, 1:])

    @torch.no_grad()
    def generate(
        self,
        z: torch.Tensor,
        max_tokens: int | None = None,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        on_step: Callable[[float], None] | None = None,
    ) -> torch.Tensor:
        """Decode token ids ``(B, T)`` from z ``(B, event)``, without ``<bos>``: each row's tokens, its
        ``<eos>`` (unless it ran out of steps) and ``<pad>`` after it. ``<pad>``, ``<bos>`` and ``<unk>`` are
        never generated. Greedy (argmax) by default, else sampled at ``temperature``.

        Each step reruns the decoder on the prefix (no key/value cache): O(T^2) token passes per sequence.
        ``on_step(fraction)``, if given, is called after each step with the fraction of the worst case's work
        done so far (roughly: token passes; 1.0 at the end, also when every row finished early), for a progress bar.
        """
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        steps = self.positions - 1 if max_tokens is None else max_tokens
        if not 1 <= steps <= self.positions - 1:
            raise ValueError(f"max_tokens must lie in [1, {self.positions - 1}], got {max_tokens!r}")
        memory, z_input = self._condition(z)
        batch = z.shape[0]
        sequence = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=z.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
        banned = torch.tensor([self.pad_id, self.bos_id, self.unk_id], device=z.device)
        # progress: the cost of a step taken as the prefix length plus a fixed part (kernel launches, the
        # memory's cross-attention) worth a quarter of the longest prefix: a rough model, for an ETA only
        overhead = steps / 4
        passes, done = steps * (steps + 1) / 2 + steps * overhead, 0.0
        for step in range(steps):
            logits = self._decode(sequence, memory, z_input)[:, -1].float()
            logits[:, banned] = float("-inf")
            if greedy:
                token = logits.argmax(-1)
            else:
                token = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            sequence = torch.cat([sequence, token.unsqueeze(1)], 1)
            finished |= token == self.eos_id
            done += step + 1 + overhead  # the decoder just ran over a prefix of step + 1 tokens
            stop = bool(finished.all())
            if on_step is not None:
                on_step(1.0 if stop else done / passes)
            if stop:
                break
        return sequence[:, 1:]
