"""Planetoid graphs and the link-prediction split: the real Cora and CiteSeer files (HSVAE_DATA_DIR), PubMed's
missing feature file, and a small graph written in the Planetoid raw format for PubMed's code path."""

from __future__ import annotations

import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hsvae.data import DatasetNotFoundError, LinkSplit, PlanetoidLinkDataModule, load_planetoid, split_edges
from hsvae.data.links import sample_non_edges, split_sizes, undirected_edges
from hsvae.data.planetoid import raw_file_names
from hsvae.latents import GaussianLatent
from hsvae.models import VGAE
from hsvae.training import LinkPredictionModule

#: undirected edges without self-loops (shared/data/README.md), and the split of 10% / 5% (floors) / the rest
EXPECTED = {"cora": (2708, 1433, 7, 5278, (4488, 263, 527)), "citeseer": (3327, 3703, 6, 4552, (3870, 227, 455))}


def raw_graph_edges(raw_dir: Path, name: str) -> set[tuple[int, int]]:
    """The undirected edges of ``ind.<name>.graph`` read straight from the pickle (an oracle independent of
    torch-geometric): pairs (i, j), i < j, self-loops dropped."""
    with open(raw_dir / f"ind.{name}.graph", "rb") as f:
        graph = pickle.load(f, encoding="latin1")
    return {(min(u, v), max(u, v)) for u, vs in graph.items() for v in vs if u != v}


def pairs(t: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(p) for p in t.T.tolist()]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("planetoid_cache")


@pytest.fixture(scope="module", params=["cora", "citeseer"])
def planetoid(request, data_dir, cache_dir):
    dm = PlanetoidLinkDataModule(request.param, str(data_dir), str(cache_dir), download=False, seed=0)
    dm.setup()
    return request.param, dm


# -- the real files ---------------------------------------------------------------------------------------------


def test_graph_matches_the_raw_files(planetoid, data_dir):
    name, dm = planetoid
    nodes, features, classes, edges, _ = EXPECTED[name]
    g = dm.graph
    assert (g.num_nodes, g.num_features, dm.num_classes) == (nodes, features, classes)
    folder = {"cora": "Cora", "citeseer": "CiteSeer"}[name]
    assert len(raw_graph_edges(data_dir / "Planetoid" / folder / "raw", name)) == edges
    # raw bag-of-words features, not normalised
    assert set(torch.unique(g.x).tolist()) <= {0.0, 1.0}


def test_split_sizes_are_exact(planetoid, data_dir):
    """85/5/10: floor(10%) test and floor(5%) validation edges (as Kipf's mask_test_edges), as many non-edges."""
    name, dm = planetoid
    g = dm.graph
    _, _, _, edges, (n_train, n_val, n_test) = EXPECTED[name]
    assert (n_val, n_test) == (edges * 5 // 100, edges // 10)
    assert split_sizes(edges, 0.05, 0.10) == (n_train, n_val, n_test)
    assert (g.train_pos.shape[1], g.val_pos.shape[1], g.test_pos.shape[1]) == (n_train, n_val, n_test)
    assert (g.val_neg.shape[1], g.test_neg.shape[1]) == (n_val, n_test)


def test_splits_partition_the_edges(planetoid, data_dir):
    """Every undirected edge is in exactly one split, once: an edge and its reverse are never apart."""
    name, dm = planetoid
    g = dm.graph
    folder = {"cora": "Cora", "citeseer": "CiteSeer"}[name]
    truth = raw_graph_edges(data_dir / "Planetoid" / folder / "raw", name)
    splits = {k: pairs(getattr(g, k)) for k in ("train_pos", "val_pos", "test_pos")}
    for k, p in splits.items():
        assert all(i < j for i, j in p), k
        assert len(set(p)) == len(p), k
    union = set().union(*map(set, splits.values()))
    assert union == truth and sum(map(len, splits.values())) == len(truth)
    # both orientations: no training pair (either way round) is a validation or test pair
    train_both = set(splits["train_pos"]) | {(j, i) for i, j in splits["train_pos"]}
    assert not train_both & (set(splits["val_pos"]) | set(splits["test_pos"]))


def test_negatives_are_distinct_non_edges(planetoid, data_dir):
    name, dm = planetoid
    g = dm.graph
    folder = {"cora": "Cora", "citeseer": "CiteSeer"}[name]
    truth = raw_graph_edges(data_dir / "Planetoid" / folder / "raw", name)
    val, test = pairs(g.val_neg), pairs(g.test_neg)
    for p in (val, test):
        assert all(i < j for i, j in p)  # no self-loops, one orientation
        assert len(set(p)) == len(p)
        assert not set(p) & truth
    assert not set(val) & set(test)


def test_no_test_edge_reaches_the_encoder(planetoid):
    """The encoder's normalised adjacency has exactly the training edges (both ways) and self-loops, and its
    output does not change when the held-out pairs do."""
    _, dm = planetoid
    g = dm.graph
    module = LinkPredictionModule(VGAE(g.num_features, GaussianLatent(16)), optimizer=torch.optim.Adam)
    x, adjacency = module.inputs(g)
    dense = adjacency.to_dense()
    nonzero = set(pairs(dense.nonzero().T))
    train = pairs(g.train_pos)
    expected = set(train) | {(j, i) for i, j in train} | {(i, i) for i in range(g.num_nodes)}
    assert nonzero == expected
    for held_out in (g.val_pos, g.test_pos):
        assert (dense[held_out[0], held_out[1]] == 0).all() and (dense[held_out[1], held_out[0]] == 0).all()
    # a different set of held-out pairs, same training edges: the same embedding
    swapped = LinkSplit(g.x, g.y, g.train_pos, g.val_neg, g.val_pos, g.test_neg, g.test_pos)
    torch.manual_seed(0)
    with torch.no_grad():
        z = module.net.embed(*module.inputs(g))
        z_swapped = module.net.embed(*module.inputs(swapped))
    assert torch.equal(z, z_swapped)


def test_split_is_seeded_and_drawn_once(data_dir, cache_dir):
    dm = PlanetoidLinkDataModule("cora", str(data_dir), str(cache_dir), download=False, seed=3)
    dm.setup()
    graph = dm.graph
    dm.setup("fit")
    dm.setup("test")
    assert dm.graph is graph  # not re-drawn by later setup calls
    loader = dm.train_dataloader()
    assert [b for epoch in range(2) for b in loader] == [graph, graph]  # the same split every epoch
    assert dm.val_dataloader().graph is graph and dm.test_dataloader().graph is graph
    again = PlanetoidLinkDataModule("cora", str(data_dir), str(cache_dir), download=False, seed=3)
    again.setup()
    other = PlanetoidLinkDataModule("cora", str(data_dir), str(cache_dir), download=False, seed=4)
    other.setup()
    for key in ("train_pos", "val_pos", "val_neg", "test_pos", "test_neg"):
        assert torch.equal(getattr(again.graph, key), getattr(graph, key)), key
    assert not torch.equal(other.graph.test_pos, graph.test_pos)


def test_raw_folder_is_left_untouched(data_dir, tmp_path):
    """The shared folder may be read-only: processed/ goes to the cache, nothing is written next to raw/."""
    folder = data_dir / "Planetoid" / "Cora"
    before = sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))
    load_planetoid("cora", data_dir, tmp_path / "cache", download=False)
    after = sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))
    assert before == after
    assert (tmp_path / "cache" / "Planetoid" / "Cora" / "processed").is_dir()
    assert sorted(p.name for p in (tmp_path / "cache" / "Planetoid" / "Cora" / "raw").iterdir()) == sorted(
        raw_file_names("cora")
    )


# -- missing and broken files --------------------------------------------------------------------------------


def test_pubmed_features_are_missing_here(data_dir, tmp_path):
    raw = data_dir / "Planetoid" / "PubMed" / "raw"
    with pytest.raises(DatasetNotFoundError) as err:
        load_planetoid("pubmed", data_dir, tmp_path, download=False)
    message = str(err.value)
    assert "ind.pubmed.allx" in message and str(raw) in message
    assert "ind.pubmed.tx" not in message  # only the missing file is named


def copy_raw(data_dir: Path, root: Path, name: str = "Cora") -> Path:
    raw = root / "Planetoid" / name / "raw"
    shutil.copytree(data_dir / "Planetoid" / name / "raw", raw)
    return raw


def test_missing_files_are_named_with_the_directory(data_dir, tmp_path, monkeypatch):
    raw = copy_raw(data_dir, tmp_path / "data")
    (raw / "ind.cora.tx").unlink()
    (raw / "ind.cora.graph").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_planetoid("cora", tmp_path / "data", tmp_path / "cache", download=False)
    message = str(err.value)
    assert "ind.cora.tx" in message and "ind.cora.graph" in message and str(raw) in message
    assert "ind.cora.allx" not in message

    # with download on and no network: the download error is reported, and no empty folder is left behind
    import torch_geometric.data

    def offline(url, folder, log=True):
        Path(folder).mkdir(parents=True, exist_ok=True)  # as torch-geometric's download_url does first
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch_geometric.data, "download_url", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed: URLError"):
        load_planetoid("cora", tmp_path / "data", tmp_path / "cache", download=True)
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        load_planetoid("citeseer", tmp_path / "data", tmp_path / "cache", download=True)
    assert not (tmp_path / "data" / "Planetoid" / "CiteSeer").exists()


def test_truncated_file_is_named_even_after_a_good_load(data_dir, tmp_path):
    raw = copy_raw(data_dir, tmp_path / "data")
    load_planetoid("cora", tmp_path / "data", tmp_path / "cache", download=False)  # processed/ now exists
    content = (raw / "ind.cora.allx").read_bytes()
    (raw / "ind.cora.allx").write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetNotFoundError) as err:
        load_planetoid("cora", tmp_path / "data", tmp_path / "cache", download=False)
    message = str(err.value)
    assert "ind.cora.allx" in message and "truncated or corrupt" in message and str(raw) in message
    assert "ind.cora.tx" not in message


def test_unknown_name_lists_the_choices(tmp_path):
    with pytest.raises(ValueError) as err:
        PlanetoidLinkDataModule("reddit", str(tmp_path / "data"), str(tmp_path / "cache"))
    assert all(name in str(err.value) for name in ("cora", "citeseer", "pubmed"))


@pytest.mark.parametrize("val, test", [(0.0, 0.1), (0.05, 0.0), (0.5, 0.5), (-0.1, 0.1), (0.05, 1.2)])
def test_bad_fractions_are_refused(tmp_path, val, test):
    # refused by the constructor, before any file is looked for
    with pytest.raises(ValueError, match="fraction"):
        PlanetoidLinkDataModule("cora", str(tmp_path / "data"), str(tmp_path / "cache"), val_fraction=val,
                                test_fraction=test)


# -- the split on small graphs ------------------------------------------------------------------------------------


def test_undirected_edges_dedupe_and_drop_self_loops():
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 3, 2], [1, 0, 1, 0, 2, 2, 3]])
    assert pairs(undirected_edges(edge_index, 4)) == [(0, 1), (0, 2), (2, 3)]
    with pytest.raises(ValueError, match="outside"):
        undirected_edges(torch.tensor([[0], [4]]), 4)


def test_non_edges_are_uniform_over_the_pairs_left():
    """Draws from a 6-node graph with 5 edges (10 non-edges): every non-edge equally likely (chi-square)."""
    n = 6
    edges = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 4, 5]])
    g = torch.Generator().manual_seed(0)
    counts: dict[tuple[int, int], int] = {}
    trials = 4000
    for _ in range(trials):
        for p in pairs(sample_non_edges(edges, n, 1, g)):
            counts[p] = counts.get(p, 0) + 1
    assert len(counts) == 10 and not set(counts) & set(pairs(edges))
    expected = trials / 10
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 27.9  # 99.9% quantile of chi-square with 9 degrees of freedom
    with pytest.raises(ValueError, match="non-edges"):
        sample_non_edges(edges, n, 11, g)


def test_split_of_a_tiny_graph_is_refused():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="too few"):
        split_edges(x, y, torch.tensor([[0, 1], [1, 2]]), 0.05, 0.10)


# -- PubMed's code path, on a small graph in the raw format ------------------------------------------------------


def write_planetoid_fixture(root: Path, name: str = "pubmed", n: int = 600, features: int = 12, classes: int = 3,
                            n_test: int = 100, seed: int = 0) -> dict:
    """Write ``root/Planetoid/<Name>/raw/ind.<name>.*`` as the Planetoid authors' files are (pickled scipy CSR
    float32 features, int32 one-hot labels, a dict of adjacency lists, a text test.index), for a
    three-community graph whose features depend on the community. Returns what was written.

    torch-geometric's reader takes the 500 nodes after the labelled ones as its validation nodes, so a graph in
    this format needs at least 10 + 500 nodes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    feats = (rng.random((n, features)) < 0.15).astype(np.float32) * rng.random((n, features)).astype(np.float32)
    feats[np.arange(n), labels] += 1.0  # community signal in the first `classes` columns
    edges = set()
    while len(edges) < 3 * n:
        i, j = rng.integers(n, size=2)
        if i != j and (labels[i] == labels[j] or rng.random() < 0.1):
            edges.add((min(i, j), max(i, j)))
    adjacency = {i: [] for i in range(n)}
    for i, j in sorted(edges):
        adjacency[i].append(int(j))
        adjacency[j].append(int(i))
    adjacency[0].append(0)  # a self-loop and a duplicate, as the real files have
    adjacency[1].append(adjacency[1][0])
    onehot = np.eye(classes, dtype=np.int32)[labels]
    n_all = n - n_test
    test_index = rng.permutation(np.arange(n_all, n))  # the test rows' node ids, in file order
    folder = root / "Planetoid" / {"pubmed": "PubMed", "cora": "Cora", "citeseer": "CiteSeer"}[name] / "raw"
    folder.mkdir(parents=True)
    objects = {
        "x": sp.csr_matrix(feats[:10]),
        "y": onehot[:10],
        "allx": sp.csr_matrix(feats[:n_all]),
        "ally": onehot[:n_all],
        "tx": sp.csr_matrix(feats[test_index]),
        "ty": onehot[test_index],
        "graph": adjacency,
    }
    for suffix, obj in objects.items():
        with open(folder / f"ind.{name}.{suffix}", "wb") as f:
            pickle.dump(obj, f, protocol=2)
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return {"x": feats, "y": labels, "edges": edges, "raw": folder}


def test_pubmed_code_path_on_a_raw_format_fixture(tmp_path):
    written = write_planetoid_fixture(tmp_path / "data")
    # (a graph of one's own: no published checksums to match)
    x, edge_index, y = load_planetoid("pubmed", tmp_path / "data", tmp_path / "cache", download=False, verify=False)
    assert torch.allclose(x, torch.from_numpy(written["x"]))
    assert torch.equal(y, torch.from_numpy(written["y"]).long())
    assert set(pairs(undirected_edges(edge_index, x.shape[0]))) == {(int(i), int(j)) for i, j in written["edges"]}
    dm = PlanetoidLinkDataModule("PubMed", str(tmp_path / "data"), str(tmp_path / "cache"), download=False,
                                 verify=False)
    dm.setup()
    e = len(written["edges"])
    assert dm.graph.test_pos.shape[1] == e // 10 and dm.graph.val_pos.shape[1] == e // 20
