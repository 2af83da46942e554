"""SMILES data: the tokenizer (exact round trip on the real ZINC250k training split, the batch encoder against the
per-string regex), the seeded 80/10/10 split, tokens outside the vocabulary, and bad files."""

from __future__ import annotations

import gzip
import logging
import random

import pytest
import torch

from hsvae.data import DatasetNotFoundError, MalformedDatasetError, SMILESDataModule, SMILESTokenizer, read_smiles
from hsvae.data.smiles import BOS_ID, EOS_ID, PAD_ID, UNK_ID, ZINC250K_MD5, to_codes, tokenize

ZINC = "zinc250k/250k_rndm_zinc_drugs_clean.smi.gz"


@pytest.fixture(scope="module")
def zinc(data_dir):
    dm = SMILESDataModule(data_dir / ZINC, download=False)
    dm.setup()
    return dm


def test_tokenize_keeps_atoms_whole():
    s = "CC(Cl)Br[C@@H]1%12c[nH]OC#N.[Na+]"
    assert tokenize(s) == ["C", "C", "(", "Cl", ")", "Br", "[C@@H]", "1", "%12", "c", "[nH]", "O", "C", "#", "N", ".", "[Na+]"]
    assert "".join(tokenize(s)) == s


def encode_one(tokenizer, smiles):
    """The ids of one string, token by token: ``<bos>``, each token's id (``<unk>`` outside the vocabulary),
    ``<eos>`` (the oracle of the corpus encoder)."""
    ids = {t: i for i, t in enumerate(tokenizer.tokens)}
    return [BOS_ID, *(ids.get(t, UNK_ID) for t in tokenize(smiles)), EOS_ID]


def test_every_training_smiles_round_trips(zinc):
    train = zinc.smiles["train"]
    assert zinc.tokenizer.decode_batch(zinc.splits["train"].x) == train
    assert zinc.unknown_strings["train"] == 0
    # the per-string path agrees with the corpus path, on a sample
    ids, lengths = zinc.splits["train"].x, zinc.splits["train"].y
    for i in random.Random(0).sample(range(len(train)), 300):
        assert ids[i, : lengths[i]].tolist() == encode_one(zinc.tokenizer, train[i])
        assert (ids[i, lengths[i]:] == PAD_ID).all()


def test_vocabulary_and_lengths_come_from_the_data(zinc):
    tokens = zinc.tokenizer.tokens
    assert tokens[:4] == ("<pad>", "<bos>", "<eos>", "<unk>") and list(tokens[4:]) == sorted(tokens[4:])
    expected = set(tokenize("".join(zinc.smiles["train"])))  # no token spans two strings
    assert set(tokens[4:]) == expected and {"Cl", "Br", "[C@@H]", "[nH]"} <= expected
    longest = max(len(tokenize(s)) for split in zinc.smiles.values() for s in split)
    assert zinc.max_length == longest
    assert all(split.x.shape[1] == longest + 2 and split.x.dtype == torch.uint8 for split in zinc.splits.values())
    x, y = zinc.splits["val"].x, zinc.splits["val"].y
    assert (x[:, 0] == BOS_ID).all() and (x[torch.arange(len(y)), y - 1] == EOS_ID).all()


def test_split_is_seeded_80_10_10_and_covers_the_file(zinc, data_dir):
    everything = read_smiles(data_dir / ZINC)
    n = len(everything)
    sizes = {k: len(v) for k, v in zinc.smiles.items()}
    assert n == 249456 and sizes == {"train": n - 2 * (n // 10), "val": n // 10, "test": n // 10}
    assert sorted(s for split in zinc.smiles.values() for s in split) == sorted(everything)
    again = SMILESDataModule(data_dir / ZINC, max_molecules=5000, split_seed=0)
    again.setup()
    other = SMILESDataModule(data_dir / ZINC, max_molecules=5000, split_seed=1)
    other.setup()
    same = SMILESDataModule(data_dir / ZINC, max_molecules=5000, split_seed=0)
    same.setup()
    assert again.smiles == same.smiles and again.smiles["test"] != other.smiles["test"]
    assert sorted(s for split in again.smiles.values() for s in split) == sorted(everything[:5000])


def test_unknown_tokens_are_counted_not_fatal(zinc):
    vocabulary = set(zinc.tokenizer.tokens)
    for split in ("val", "test"):
        strings = zinc.smiles[split]
        with_unknown = [s for s in strings if any(t not in vocabulary for t in tokenize(s))]
        assert zinc.unknown_strings[split] == len(with_unknown)
        counted = sum(t not in vocabulary for s in with_unknown for t in tokenize(s))
        assert sum(zinc.unknown[split].values()) == counted
    assert zinc.unknown_strings["test"] > 0  # this split has a few rare bracket atoms (measured: 4)
    assert int((zinc.splits["test"].x == UNK_ID).sum()) == sum(zinc.unknown["test"].values())

def test_unknown_tokens_are_reported_in_the_log(tmp_path, caplog):
    # every string has an atom of its own, so every validation and test string has an unknown token
    path = tmp_path / "rare.smi"
    path.write_text("".join(f"C[{i}C]O\n" for i in range(50)))
    with caplog.at_level(logging.WARNING, logger="hsvae.data.smiles"):
        dm = SMILESDataModule(path, verify=False)  # a list of one's own
        dm.setup()
    assert dm.unknown_strings == {"train": 0, "val": 5, "test": 5}
    messages = [r.getMessage() for r in caplog.records if "outside the training vocabulary" in r.getMessage()]
    assert len(messages) == 2 and "5 of 5 test SMILES" in messages[1] and "rare.smi" in messages[1]


def test_unknown_strings_and_characters_encode_as_unk():
    tokenizer = SMILESTokenizer.from_codes(to_codes(["CC(C)O", "c1ccccc1"]))
    encoded = tokenizer.encode_codes(to_codes(["C[Si](C)C", "CXC", "Cé", "CCO"]))
    assert encoded.unknown == {"[Si]": 1, "X": 1, "\x00": 1} and encoded.unknown_strings == 3
    assert tokenizer.decode_batch(encoded.ids) == ["C<unk>(C)C", "C<unk>C", "C<unk>", "CCO"]


def test_batch_encoder_tokenises_like_the_regex():
    """Random strings over an alphabet with bracket atoms, Cl, Br, %nn and their broken forms."""
    rng = random.Random(1)
    pieces = ["C", "c", "l", "r", "B", "Br", "Cl", "[", "]", "[NH+]", "[Cl-]", "%", "%1", "%12", "1", "(", ")", "=", "H", "+"]
    strings = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    corpus = to_codes(strings)
    tokenizer = SMILESTokenizer.from_codes(corpus)
    assert set(tokenizer.tokens[4:]) == {t for s in strings for t in tokenize(s)}
    encoded = tokenizer.encode_codes(corpus)
    for s, row, n in zip(strings, encoded.ids, encoded.lengths):
        assert row[:n].tolist() == encode_one(tokenizer, s)
    assert tokenizer.decode_batch(encoded.ids) == strings


def test_bad_tokenizer_input():
    with pytest.raises(ValueError, match="starts with"):
        SMILESTokenizer(["C", "N"])
    with pytest.raises(ValueError, match="not a SMILES token"):
        SMILESTokenizer(["<pad>", "<bos>", "<eos>", "<unk>", "CC"])
    tokenizer = SMILESTokenizer.from_codes(to_codes(["CCO"]))
    with pytest.raises(ValueError, match="newlines"):
        tokenizer.encode_codes(to_codes(["C\nC"]))
    with pytest.raises(ValueError, match="length=3"):
        tokenizer.encode_codes(to_codes(["CCO"]), length=3)


# -- files ------------------------------------------------------------------------------------------------------


def test_formats(tmp_path):
    (tmp_path / "named.smi").write_text("smiles\nCCO ethanol\nc1ccccc1\tbenzene\n\n")
    assert read_smiles(tmp_path / "named.smi") == ["CCO", "c1ccccc1"]
    with gzip.open(tmp_path / "props.csv.gz", "wt") as f:
        f.write('smiles,logP\n"CCO\n",0.1\nC[C@@H](N)Cl,1.2\n')
    assert read_smiles(tmp_path / "props.csv.gz") == ["CCO", "C[C@@H](N)Cl"]


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("empty.smi", b"", "contains no SMILES"),
        ("blank.smi.gz", gzip.compress(b"\n\n"), "contains no SMILES"),
        ("fake.smi.gz", b"CCO\n", "not gzip-compressed"),
        ("truncated.smi.gz", gzip.compress(b"CCO\n" * 1000)[:-10], "not a readable gzip file"),
        ("binary.smi", bytes(range(256)), "not ASCII"),
        ("page.smi", b"CCO\n<html><body>404</body></html>\n", "entry 2"),
        ("header.csv", b"name,logP\nx,1\n", "'smiles' column"),
        ("lowercase.smi", b"CCO\nCcl\n", "'l'"),
        ("control.smi", b"CCO\nC[N\x01H+]C\n", "entry 2"),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v else "",
)
def test_malformed_files_name_themselves(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MalformedDatasetError) as err:
        read_smiles(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_file_and_download(tmp_path, data_dir):
    target = tmp_path / "zinc250k" / "zinc.smi.gz"
    with pytest.raises(DatasetNotFoundError, match=str(target)):
        SMILESDataModule(target, download=False).setup()
    # the download path, from a local URL: checked against the MD5, then read
    source = (data_dir / ZINC).resolve().as_uri()
    dm = SMILESDataModule(target, download=True, url=source, md5=ZINC250K_MD5, max_molecules=1000)
    dm.setup()
    assert target.is_file() and len(dm.smiles["train"]) == 800
    # a download that is not the expected file is refused and not kept
    other = tmp_path / "other" / "zinc.smi.gz"
    with pytest.raises(DatasetNotFoundError, match="MD5"):
        SMILESDataModule(other, download=True, url=source, md5="0" * 32).setup()
    assert not other.exists() and not list(other.parent.glob("*.part"))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"val_fraction": 0.0}, "val_fraction"), ({"test_fraction": 0.6, "val_fraction": 0.5}, "< 1"),
     ({"max_molecules": 2}, "max_molecules"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_arguments(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SMILESDataModule(tmp_path / "x.smi", **kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_cuts_each_batch_to_its_longest_string_on_the_host(shuffle):
    """Padding columns beyond a batch's longest string are dropped by the loader, from a CPU copy of the lengths
    (the ids may live on a GPU): every batch is as wide as its longest row, and no used column is lost."""
    from hsvae.data.loaders import TensorLoader

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 40, (103,), generator=generator)
    ids = torch.full((103, 40), PAD_ID)
    for row, n in enumerate(lengths.tolist()):
        ids[row, :n] = torch.randint(4, 30, (n,), generator=generator)
    seen = 0
    for batch_ids, batch_lengths in TensorLoader(ids, lengths, batch_size=16, shuffle=shuffle, widths=lengths):
        assert batch_ids.shape[1] == int(batch_lengths.max())
        assert (batch_ids != PAD_ID).sum() == batch_lengths.sum()
        seen += len(batch_lengths)
    assert seen == 103
    with pytest.raises(ValueError, match="widths"):
        TensorLoader(ids, lengths, batch_size=16, widths=lengths[:5])
