"""DuckDB session settings shared by every batch job."""

from pathlib import Path

import pytest

from framework.duck import connect
from framework.errors import ConfigError


def test_connect_applies_settings(tmp_path: Path) -> None:
    con = connect(memory_limit="512MB", temp_directory=tmp_path / "spill", threads=1)
    tz, bar, limit, threads, temp = (
        con.execute(
            "SELECT current_setting('TimeZone'), current_setting('enable_progress_bar'),"
            " current_setting('memory_limit'), current_setting('threads'),"
            " current_setting('temp_directory')"
        ).fetchone()
        or ()
    )
    assert tz == "UTC"
    assert bar is False  # a progress bar on stdout would corrupt --json output
    assert limit.startswith("488.2")  # 512 MB in MiB
    assert threads == 1
    assert temp == str(tmp_path / "spill")
    assert (tmp_path / "spill").is_dir()


def test_bad_memory_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Invalid DuckDB setting"):
        connect(memory_limit="a lot")
