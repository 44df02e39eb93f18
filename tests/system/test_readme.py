"""The README states facts that live elsewhere; it must not drift from them."""

from __future__ import annotations

import re

from service.cli import settings_table
from tests.support.liveserver import ROOT

README = (ROOT / "README.md").read_text()


def test_configuration_table_is_the_settings() -> None:
    """Regenerate with `mnist-serve --settings-table` after changing service/settings.py."""
    assert settings_table() in README


def test_linked_documents_exist() -> None:
    links = re.findall(r"\]\(((?:docs|models|client)/[^)#]+)\)", README)
    assert links, "the README links its docs/"
    assert [link for link in links if not (ROOT / link).exists()] == []
