"""ChainedBackend and ReadOnlyBackend: the backend conformance suite, and fall-through,
whiteouts and ordered resolution over a non-empty read-only base."""

from __future__ import annotations

import pytest

from diced.backends import open_backend
from diced.backends.chain import ChainedBackend, ReadOnlyBackend
from diced.errors import InvalidArgumentError, ReadOnlyStoreError
from diced.testing.backend_conformance import BackendConformance


class TestChainConformance(BackendConformance):
    """A chain behaves as one backend (over an empty base: the suite expects an empty store)."""

    @pytest.fixture
    def backend(self, tmp_path):
        base = open_backend(str(tmp_path / "base"))
        b = ChainedBackend(open_backend(str(tmp_path / "local")), base)
        yield b
        b.close()

    @pytest.fixture
    def reopen_backend(self, tmp_path):
        made = []

        def reopen():
            b = ChainedBackend(open_backend(str(tmp_path / "local")),
                               open_backend(str(tmp_path / "base")))
            made.append(b)
            return b

        yield reopen
        for b in made:
            b.close()
