"""``set_nprobe`` on GPU indexes (faked: this machine has no GPU) and on wrapped CPU indexes.

faiss's ``extract_index_ivf`` does not accept ``GpuIndexIVF*`` (they are no
``IndexIVF``), so the old code silently ignored ``--nprobe`` on a GPU index. The
GPU branch must go through ``faiss.GpuParameterSpace`` and fail loudly otherwise.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.errors import OpenbookError
from pipeline.index.faiss_index import set_nprobe


class GpuIndexIVFPQ:
    """Stands in for faiss's GPU IVF-PQ index: not an ``IndexIVF``, nprobe on the object."""

    def __init__(self, nprobe: int = 1):
        self.nprobe = nprobe


class GpuIndexIVFFlat:
    """An older faiss GPU index: only ``getNumProbes``/``setNumProbes``."""

    def __init__(self):
        self._n = 1

    def getNumProbes(self) -> int:  # noqa: N802 (faiss's name)
        return self._n

    def setNumProbes(self, n: int) -> None:  # noqa: N802
        self._n = n


class IndexReplicas:
    """``index_cpu_to_all_gpus`` on several GPUs: one replica per GPU."""

    def __init__(self, *indexes):
        self.indexes = indexes

    def count(self) -> int:
        return len(self.indexes)

    def at(self, i: int):
        return self.indexes[i]


def _fake_gpu_space(calls: list, *, works: bool = True, raises: bool = False):
    """A GpuParameterSpace that records its calls and, like faiss's, sets GPU IVF nprobe."""

    class GpuParameterSpace:
        def set_index_parameter(self, index, name, val):
            calls.append((index, name, val))
            if raises:
                raise RuntimeError("Error in GpuParameterSpace: nprobe must be <= 2048")
            if not works:
                return  # sets nothing: the read-back must notice
            for leaf in getattr(index, "indexes", [index]):
                if hasattr(leaf, "setNumProbes"):
                    leaf.setNumProbes(int(val))
                else:
                    leaf.nprobe = int(val)

    return GpuParameterSpace


def test_gpu_index_gets_nprobe_through_gpu_parameter_space(monkeypatch):
    calls: list = []
    monkeypatch.setattr(faiss, "GpuParameterSpace", _fake_gpu_space(calls), raising=False)
    monkeypatch.setattr(faiss, "extract_index_ivf", lambda index: pytest.fail(
        "extract_index_ivf does not accept GPU indexes"))
    gpu = GpuIndexIVFPQ()
    set_nprobe(gpu, 48)
    assert gpu.nprobe == 48
    assert calls == [(gpu, "nprobe", 48)]


def test_multi_gpu_replicas_all_get_nprobe(monkeypatch):
    calls: list = []
    monkeypatch.setattr(faiss, "GpuParameterSpace", _fake_gpu_space(calls), raising=False)
    a, b = GpuIndexIVFPQ(), GpuIndexIVFFlat()
    set_nprobe(IndexReplicas(a, b), 7)
    assert (a.nprobe, b.getNumProbes()) == (7, 7)
    assert len(calls) == 1 and calls[0][1:] == ("nprobe", 7)


def test_gpu_refusing_nprobe_is_an_error_not_ignored(monkeypatch):
    monkeypatch.setattr(faiss, "GpuParameterSpace", _fake_gpu_space([], raises=True),
                        raising=False)
    with pytest.raises(OpenbookError, match=r"--nprobe 4096: cannot set it on the GPU index "
                                            r"GpuIndexIVFPQ \(.*<= 2048\).*CPU"):
        set_nprobe(GpuIndexIVFPQ(), 4096)


def test_gpu_nprobe_that_does_not_take_is_an_error(monkeypatch):
    monkeypatch.setattr(faiss, "GpuParameterSpace", _fake_gpu_space([], works=False),
                        raising=False)
    with pytest.raises(OpenbookError, match="GpuIndexIVFPQ still probes 1 lists"):
        set_nprobe(GpuIndexIVFPQ(), 32)


def test_gpu_index_without_gpu_faiss_is_an_error(monkeypatch):
    monkeypatch.delattr(faiss, "GpuParameterSpace", raising=False)
    with pytest.raises(OpenbookError, match=r"no GpuParameterSpace.*pip install '\.\[gpu\]'"):
        set_nprobe(GpuIndexIVFPQ(), 8)


def _trained(factory: str):
    index = faiss.index_factory(8, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(np.random.default_rng(0).random((400, 8), dtype=np.float32))
    return index


def test_cpu_ivf_behind_opq_and_replicas_gets_nprobe():
    opq = _trained("OPQ4_8,IVF4,PQ4x4np")
    set_nprobe(opq, 3)
    assert faiss.extract_index_ivf(opq).nprobe == 3
    replicas = faiss.IndexReplicas()  # extract_index_ivf refuses this wrapper
    replicas.addIndex(opq)
    set_nprobe(replicas, 2)
    assert faiss.extract_index_ivf(opq).nprobe == 2


def test_flat_indexes_have_nothing_to_probe():
    flat = faiss.IndexFlatIP(8)
    set_nprobe(flat, 5)  # exact search: a no-op, not an error
    replicas = faiss.IndexReplicas()
    replicas.addIndex(flat)
    set_nprobe(replicas, 5)
    set_nprobe(_trained("IVF4,PQ4x4np"), None)  # None: keep the index's own


def test_nprobe_below_one_is_refused():
    with pytest.raises(OpenbookError, match="--nprobe must be 1 or more, got 0"):
        set_nprobe(_trained("IVF4,PQ4x4np"), 0)
