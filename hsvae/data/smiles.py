"""SMILES strings (ZINC250k): reading, a character-level tokenizer and an in-memory data module.

Tokens. A SMILES string is split into atoms and symbols: a bracket atom (``[C@@H]``, ``[nH]``, ``[NH3+]``)
is one token, so are the two-letter organic atoms ``Cl`` and ``Br`` and a two-digit ring closure (``%12``);
every other character is a token of its own. Joining the tokens gives the string back, so encoding and
decoding are exact for every string whose tokens are in the vocabulary.

Encoded sequences. ``<bos> t_1 ... t_n <eos> <pad> ...``; the ids of ``<pad>, <bos>, <eos>, <unk>`` are
0, 1, 2, 3 and the data's tokens follow in sorted order. The vocabulary is built from the training split;
a token of a validation or test string that training never saw becomes ``<unk>``: such strings are counted
and reported (logged, and kept in :attr:`SMILESDataModule.unknown`), never a crash.

Speed. Encoding works on the whole corpus at once (one regular-expression pass to replace multi-character
tokens by private code points, then numpy look-ups), about 1 s for the 250k molecules of ZINC250k, so no
cache is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import urllib.request
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hsvae.utils.io import atomic_file

from .integrity import verify_file
from .base import InMemoryDataModule, Split
from .links import check_split_fractions, split_sizes
from hsvae.utils.errors import DatasetNotFoundError, MalformedDatasetError

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)

#: multi-character tokens: bracket atoms, Cl, Br, two-digit ring closures
_MULTI_CHAR = re.compile(r"\[[^\[\]\n]*\]|Br|Cl|%\d\d")
#: one token, for single strings (the batch encoder does the same in two passes)
_TOKEN = re.compile(r"\[[^\[\]\n]*\]|Br|Cl|%\d\d|.", re.S)
#: characters allowed outside bracket atoms (OpenSMILES: organic subset, aromatic atoms, bonds, ring
#: closures, branches, the dot and the wildcard), newline as the separator of the joined corpus
_ALLOWED_OUTSIDE_BRACKETS = "BCNOPSFIbcnops0123456789()=#$:/\\.-%*\n"
_DELETE_ALLOWED = str.maketrans("", "", _ALLOWED_OUTSIDE_BRACKETS)
#: first code point standing for a multi-character token during encoding: the supplementary private use
#: areas (U+F0000 to U+10FFFF), which no SMILES contains; room for 131072 distinct multi-character tokens
_PLACEHOLDER_BASE = 0xF0000
_PLACEHOLDER_COUNT = 0x110000 - _PLACEHOLDER_BASE
_NOT_PRINTABLE_ASCII = re.compile(r"[^\n\x20-\x7e]")

#: the ZINC250k SMILES list this project uses (DD-VAE's copy of the chemical-VAE data set), pinned to a commit
ZINC250K_URL = (
    "https://github.com/insilicomedicine/DD-VAE/raw/13498d098bae2c8177abec61ab80d8b618d274f3/"
    "data/zinc/250k_rndm_zinc_drugs_clean.smi.gz"
)
ZINC250K_MD5 = "4bf25482eeec1548af228ccacb47dbf6"


# -- reading ---------------------------------------------------------------------------------------------------


def tokenize(smiles: str) -> list[str]:
    """The tokens of one SMILES string (``"".join(tokenize(s)) == s``)."""
    return _TOKEN.findall(smiles)


def _first_bad(smiles: str) -> str | None:
    """The first character of ``smiles`` outside the SMILES alphabet (bracket atoms aside), or None."""
    control = _NOT_PRINTABLE_ASCII.search(smiles)  # e.g. a control character inside a bracket atom
    if control is not None:
        return control.group()
    rest = _MULTI_CHAR.sub("", smiles)
    leftover = rest.translate(_DELETE_ALLOWED).replace("\n", "")
    return leftover[0] if leftover else None


def check_smiles(smiles: Sequence[str], source: str) -> None:
    """Raise :class:`MalformedDatasetError` naming ``source`` and the first entry that is not a SMILES string.

    The check is lexical (the alphabet outside bracket atoms, balanced brackets), not chemical: RDKit decides
    validity. It runs over the whole corpus in C-speed string operations and inspects single entries only on
    failure.
    """
    text = "\n".join(smiles)
    if _first_bad(text) is None:
        return
    for i, s in enumerate(smiles):
        bad = _first_bad(s)
        if bad is not None:
            raise MalformedDatasetError(
                f"{source}: entry {i + 1} ({s[:80]!r}) is not a SMILES string (character {bad!r} is outside the "
                "SMILES alphabet). Expected one SMILES per line (optionally followed by a name), or a CSV file with a "
                "'smiles' column."
            )


def _parse_csv(text: str, source: str) -> list[str]:
    import csv
    import io

    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    columns = [h.strip().lower() for h in header or []]
    if "smiles" not in columns:
        raise MalformedDatasetError(f"{source}: a CSV file needs a 'smiles' column; its header is {header!r}")
    col = columns.index("smiles")
    values = (row[col].strip() for row in reader if len(row) > col)  # the chemical-VAE CSV stores "SMILES\n"
    return [value for value in values if value]


def read_smiles(path: str | Path) -> list[str]:
    """Read a SMILES list: one string per line (a trailing name column and a ``smiles`` header line are
    ignored), or a CSV file (``.csv``) with a ``smiles`` column; gzip-compressed or plain.

    Raises:
        DatasetNotFoundError: the file does not exist.
        MalformedDatasetError: it is empty, not gzip when it claims to be, not ASCII text, or holds a line
            that is not a SMILES string (the message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"SMILES file {path} does not exist")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif path.suffix == ".gz":
            raise MalformedDatasetError(f"{path} is named .gz but is not gzip-compressed (an interrupted download?)")
    except (OSError, EOFError, zlib.error) as err:
        raise MalformedDatasetError(f"{path} is not a readable gzip file ({type(err).__name__}: {err}); replace it") from err
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        raise MalformedDatasetError(
            f"{path}: byte {err.start} (0x{raw[err.start]:02x}) is not ASCII; a SMILES file is plain text "
            "(is it a binary or an HTML page saved by a failed download?)"
        ) from err
    if path.name.removesuffix(".gz").endswith(".csv"):
        smiles = _parse_csv(text, str(path))
    else:
        smiles = [line.split(None, 1)[0] for line in text.splitlines() if line.strip()]
        if smiles and smiles[0].lower() == "smiles":
            smiles = smiles[1:]
    if not smiles:
        raise MalformedDatasetError(f"{path} contains no SMILES strings (the file is empty)")
    check_smiles(smiles, str(path))
    return smiles


def download_file(url: str, path: Path, md5: str | None = None) -> None:
    """Download ``url`` to ``path`` (through a temporary file in the same folder), checking its MD5 when given."""
    with atomic_file(path, "wb", suffix=".part") as out, urllib.request.urlopen(url, timeout=60) as response:
        digest = hashlib.md5()
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise DatasetNotFoundError(f"the download from {url} has MD5 {digest.hexdigest()}, expected {md5}: "
                                       "not the right file")


# -- the tokenizer -----------------------------------------------------------------------------------------------


@dataclass
class EncodedSMILES:
    """A batch of encoded strings: ``ids (N, L)`` (``<bos> ... <eos>`` then ``<pad>``), ``lengths (N,)`` (tokens
    including ``<bos>`` and ``<eos>``), and the tokens outside the vocabulary with their counts."""

    ids: torch.Tensor
    lengths: torch.Tensor
    unknown: Counter = field(default_factory=Counter)
    #: how many strings contain at least one unknown token
    unknown_strings: int = 0


@dataclass
class TokenCodes:
    """A tokenised corpus: one code per token, each string followed by a newline (code 10).

    ``placeholders`` maps each multi-character token to its code; a single-character token's code is its
    code point. ``ends[i]`` is the position of string i's newline.
    """

    codes: np.ndarray
    placeholders: dict[str, int]
    ends: np.ndarray

    def rows(self, lo: int, hi: int) -> TokenCodes:
        """Strings ``lo`` to ``hi - 1`` (a view, no copy)."""
        start = int(self.ends[lo - 1]) + 1 if lo > 0 else 0
        stop = int(self.ends[hi - 1]) + 1 if hi > 0 else 0
        return TokenCodes(self.codes[start:stop], self.placeholders, self.ends[lo:hi] - start)

    def token_name(self, code: int) -> str:
        names = {c: t for t, c in self.placeholders.items()}
        return names.get(int(code), chr(int(code)))


def to_codes(smiles: Sequence[str]) -> TokenCodes:
    """Tokenise a corpus at once: each string's tokens as codes, strings separated by newlines (code 10).

    Multi-character tokens are replaced by codes of their own (returned as token -> code): 128 to 255 while
    they fit, which keeps the text one byte per character (every replacement and the conversion to numpy
    then run at memory speed), private-use code points beyond that. Characters that could collide with those
    codes (anything but printable ASCII) become NUL, which no vocabulary contains, so they encode as unknown.
    """
    text = "\n".join(smiles) + "\n"
    if text.count("\n") != len(smiles):
        raise ValueError("SMILES strings must not contain newlines")
    if not text.isascii():
        text = _NOT_PRINTABLE_ASCII.sub("\x00", text)
    # The distinct multi-character tokens (findall runs in C), then one str.replace per distinct token: bracket
    # atoms first, since they may contain "Cl" or "Br". Occurrences cannot overlap (a bracket atom contains no
    # bracket; Cl, Br and %nn share no character), so this tokenises exactly as the left-to-right regex
    # `tokenize` does, at a fraction of the cost of a per-match Python callback.
    distinct = sorted(set(_MULTI_CHAR.findall(text)), key=lambda t: (not t.startswith("["), t))
    if len(distinct) > 128 + _PLACEHOLDER_COUNT:
        raise ValueError(f"more than {128 + _PLACEHOLDER_COUNT} distinct multi-character SMILES tokens")
    placeholders = {token: 128 + k if k < 128 else _PLACEHOLDER_BASE + k - 128 for k, token in enumerate(distinct)}
    for token, code in placeholders.items():
        text = text.replace(token, chr(code))
    if len(distinct) <= 128:
        codes = np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
    else:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    # control characters (the text is printable ASCII otherwise) may not pass as tokens either
    control = ((codes < 32) & (codes != 10)) | (codes == 127)
    if control.any():
        codes = np.where(control, 0, codes).astype(codes.dtype)
    return TokenCodes(codes, placeholders, np.flatnonzero(codes == 10))


_NUMPY_DTYPES = {torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32}


class SMILESTokenizer:
    """Maps SMILES strings to token ids and back (see the module docstring for the tokens).

    Args:
        tokens: the vocabulary, id order; must start with ``<pad>, <bos>, <eos>, <unk>``.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = tuple(tokens)
        if tokens[:4] != SPECIAL_TOKENS:
            raise ValueError(f"a SMILES vocabulary starts with {SPECIAL_TOKENS}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("the SMILES vocabulary has duplicate tokens")
        for token in tokens[4:]:
            if not token or _NOT_PRINTABLE_ASCII.search(token) or tokenize(token) != [token]:
                raise ValueError(f"{token!r} is not a SMILES token")
        self.tokens = tokens
        self.token_to_id = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def from_codes(cls, corpus: TokenCodes) -> SMILESTokenizer:
        """The vocabulary of a corpus tokenised by :func:`to_codes` (e.g. the training split): the special tokens,
        then its tokens sorted."""
        present = np.flatnonzero(np.bincount(corpus.codes))
        found = sorted(corpus.token_name(c) for c in present if c != 10)
        return cls((*SPECIAL_TOKENS, *found))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id (uint8 for ZINC250k's 66 tokens)."""
        n = self.vocab_size
        return torch.uint8 if n <= 256 else torch.int16 if n <= 32767 else torch.int32

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SMILESTokenizer) and other.tokens == self.tokens

    def __repr__(self) -> str:
        return f"SMILESTokenizer(vocab_size={self.vocab_size})"

    # -- whole corpora ------------------------------------------------------------------------------------------
    def encode_codes(self, corpus: TokenCodes, length: int | None = None) -> EncodedSMILES:
        """Encode a corpus tokenised by :func:`to_codes` at once into ``(N, L)`` ids, ``L = length`` or the longest
        sequence (unknown tokens become ``<unk>``).

        Raises:
            ValueError: a string needs more than ``length`` positions.
        """
        codes, placeholders, ends = corpus.codes, corpus.placeholders, corpus.ends
        n = ends.size
        np_dtype = _NUMPY_DTYPES[self.dtype]
        table = np.full(int(codes.max(initial=10)) + 1, UNK_ID, dtype=np_dtype)
        for token, i in self.token_to_id.items():
            code = placeholders.get(token) if len(token) > 1 else ord(token)
            if code is not None and code < table.size and i >= len(SPECIAL_TOKENS):
                table[code] = i
        newline = codes == 10
        starts = np.concatenate([[0], ends[:-1] + 1])
        counts = ends - starts  # tokens per string
        needed = int(counts.max(initial=0)) + 2
        width = needed if length is None else length
        if needed > width:
            raise ValueError(f"a SMILES string needs {needed} positions (with <bos> and <eos>), more than length={width}")
        positions = np.flatnonzero(~newline)
        rows = np.repeat(np.arange(n), counts)
        cols = positions - starts[rows] + 1
        ids = table[codes[positions]]
        out = np.full((n, width), PAD_ID, dtype=np_dtype)
        out[:, 0] = BOS_ID
        out[rows, cols] = ids
        out[np.arange(n), counts + 1] = EOS_ID
        unknown_mask = ids == UNK_ID
        unknown: Counter = Counter()
        unknown_strings = 0
        if unknown_mask.any():
            values, freq = np.unique(codes[positions][unknown_mask], return_counts=True)
            unknown = Counter({corpus.token_name(c): int(k) for c, k in zip(values, freq)})
            unknown_strings = int(np.unique(rows[unknown_mask]).size)
        return EncodedSMILES(
            torch.from_numpy(out), torch.from_numpy(counts + 2), unknown, unknown_strings
        )

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        """The strings of every row of ``ids (N, L)``, in one pass: each stops at its first ``<eos>`` and skips
        ``<bos>`` and ``<pad>``; ``<unk>`` (and an id outside the vocabulary) is spelt out."""
        a = ids.detach().cpu().numpy().astype(np.int64)
        if a.ndim != 2:
            raise ValueError(f"decode_batch expects ids of shape (N, L), got {tuple(a.shape)}")
        n, width = a.shape
        # one display code per id: the character itself, or a private code for multi-character tokens
        display = np.empty(self.vocab_size, dtype=np.uint32)
        expand = {}
        for i, token in enumerate(self.tokens):
            if len(token) == 1:
                display[i] = ord(token)
            else:
                display[i] = _PLACEHOLDER_BASE + i
                expand[_PLACEHOLDER_BASE + i] = token
        a = np.where((a >= 0) & (a < self.vocab_size), a, UNK_ID)
        is_eos = a == EOS_ID
        first_eos = np.where(is_eos.any(1), is_eos.argmax(1), width)
        keep = (np.arange(width)[None, :] < first_eos[:, None]) & (a != PAD_ID) & (a != BOS_ID)
        codes = np.where(keep, display[a], 0)
        codes = np.concatenate([codes, np.full((n, 1), 10, dtype=np.uint32)], axis=1)
        kept = np.concatenate([keep, np.ones((n, 1), dtype=bool)], axis=1)
        text = codes[kept].astype(np.uint32).tobytes().decode("utf-32-le")
        return text.translate(expand).split("\n")[:-1]


# -- the data module -------------------------------------------------------------------------------------------


class SMILESDataModule(InMemoryDataModule):
    """A SMILES corpus split 80/10/10 (by default) with a seeded permutation, encoded in memory.

    Batches are ``(ids, lengths)``: ``ids (B, L)`` in the tokenizer's compact dtype (cast to long in the
    model), cut to the batch's longest string, and ``lengths (B,)`` the tokens per sequence including
    ``<bos>``/``<eos>``. After :meth:`setup`:
    ``tokenizer`` (built from the training split), ``smiles`` (the strings of each split), ``max_length``
    (tokens of the longest string, over all splits), and ``unknown`` / ``unknown_strings`` (per split, the
    tokens outside the training vocabulary and how many strings contain one).

    Args:
        path: the SMILES file (see :func:`read_smiles` for the formats).
        download: fetch ``url`` to ``path`` when the file is missing.
        url, md5: where to download from, and the expected MD5 of the file (None: unchecked).
        verify: check an existing file against ``md5`` before it is read (false for a list of one's own).
        cache_dir: where a verified file's stamp is kept (``paths.cache_dir``; None: hash every time).
        val_fraction, test_fraction: shares of the molecules held out.
        split_seed: seed of the split permutation (fixed across runs by default, so that runs with different
            ``seed`` compare on the same test molecules).
        max_molecules: use only the file's first this many molecules (None: all).
        batch_size, eval_batch_size, seed: as :class:`InMemoryDataModule` (``seed``: batch shuffling).
    """

    def row_widths(self, split: Split) -> torch.Tensor:
        """The tokens of each string (``<bos>`` and ``<eos>`` included): batches drop the padding columns beyond
        their longest string, decided on the host."""
        return split.y.cpu()

    def __init__(
        self,
        path: str | Path,
        download: bool = False,
        url: str | None = ZINC250K_URL,
        md5: str | None = ZINC250K_MD5,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        max_molecules: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        seed: int = 0,
        verify: bool = True,
        cache_dir: str | Path | None = None,
    ):
        super().__init__(batch_size, eval_batch_size, seed)
        check_split_fractions(val_fraction, test_fraction)
        if max_molecules is not None and (isinstance(max_molecules, bool) or not isinstance(max_molecules, int) or max_molecules < 3):
            raise ValueError(f"max_molecules must be an integer >= 3 or null (all), got {max_molecules!r}")
        self.path = Path(path).expanduser()
        self.download, self.url, self.md5 = download, url, md5
        self.verify, self.cache_dir = verify, cache_dir
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed, self.max_molecules = split_seed, max_molecules
        self.tokenizer: SMILESTokenizer | None = None
        self.smiles: dict[str, list[str]] = {}
        self.max_length = 0
        self.unknown: dict[str, Counter] = {}
        self.unknown_strings: dict[str, int] = {}

    def _ensure_file(self) -> None:
        if self.path.is_file():
            if self.verify and self.md5:  # the published list's checksum (a stamp in the cache: hashed once)
                verify_file(self.path, self.md5, self.cache_dir, f"Replace it with an intact copy (from {self.url}).")
            return
        reason = ""
        if self.download and self.url:
            try:
                download_file(self.url, self.path, self.md5)
                return
            except Exception as err:  # network, permissions, a moved URL: the same advice follows
                reason = f" (download from {self.url} failed: {type(err).__name__}: {err})"
        raise DatasetNotFoundError(
            f"SMILES file {self.path} not found{reason}. Put the ZINC250k SMILES list there "
            f"(250k_rndm_zinc_drugs_clean.smi.gz, from {ZINC250K_URL}), set HSVAE_DATA_DIR / paths.data_dir to the "
            "folder that contains zinc250k/, or run once with network access and dataset.download=true."
        )

    def load_splits(self) -> dict[str, Split]:
        self._ensure_file()
        smiles = read_smiles(self.path)
        if self.max_molecules is not None:
            smiles = smiles[: self.max_molecules]
        n = len(smiles)
        n_train, n_val, n_test = split_sizes(n, self.val_fraction, self.test_fraction)
        if min(n_test, n_val, n_train) < 1:
            raise ValueError(
                f"{self.path}: {n} molecules are too few for val_fraction={self.val_fraction}, "
                f"test_fraction={self.test_fraction}"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.split_seed))).tolist()
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        self.smiles = {name: [smiles[i] for i in idx] for name, idx in parts.items()}
        # tokenise the corpus once, in split order, and cut it into the splits
        names = ("train", "val", "test")
        corpus = to_codes([s for name in names for s in self.smiles[name]])
        bounds = np.cumsum([0, *(len(self.smiles[name]) for name in names)])
        pieces = {name: corpus.rows(int(bounds[i]), int(bounds[i + 1])) for i, name in enumerate(names)}
        self.tokenizer = SMILESTokenizer.from_codes(pieces["train"])
        width = int(np.diff(corpus.ends, prepend=-1).max()) + 1  # the longest string's tokens, <bos> and <eos>
        self.max_length = width - 2
        splits = {}
        for name in names:
            e = self.tokenizer.encode_codes(pieces[name], width)
            splits[name] = Split(e.ids, e.lengths)
            self.unknown[name], self.unknown_strings[name] = e.unknown, e.unknown_strings
            if e.unknown_strings:
                listed = ", ".join(f"{t} x{k}" for t, k in e.unknown.most_common(10))
                log.warning(
                    "%s: %d of %d %s SMILES contain tokens outside the training vocabulary (%s); they are encoded "
                    "as %s and count as reconstruction errors", self.path.name, e.unknown_strings, len(e.lengths),
                    name, listed, UNK,
                )
        return splits
