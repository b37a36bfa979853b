"""Files the model runner writes can be served by a web server running as another user.

In production nginx (its own user, in the group of the media volume) serves stimuli through
X-Accel-Redirect; a file it cannot read answers 403 to every participant.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from modelrunner.audio import FILE_MODE, write_wav

#: The web server's user and the media volume's group, as in docker/ (nginx runs as 101).
SERVER_UID, MEDIA_GID = 101, 10001


def test_write_wav_leaves_a_group_readable_file(tmp_path):
    path = write_wav(tmp_path / "s.wav", np.zeros(480, dtype=np.float32), 48000)
    assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def _read_as_server(path) -> int:
    """Exit status of a process reading ``path`` as the web server's user and group."""
    code = (
        "import os, sys\n"
        f"os.setgroups([]); os.setgid({MEDIA_GID}); os.setuid({SERVER_UID})\n"
        "open(sys.argv[1], 'rb').read(4)\n"
    )
    # The system interpreter: the server user may not reach this checkout's virtual environment.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run([python, "-c", code, str(path)], capture_output=True).returncode


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root to switch users")
def test_a_written_stimulus_is_readable_by_the_server_user_in_the_media_group():
    # A folder the server user can traverse (pytest's own tmp folders are private to root).
    folder = Path(tempfile.mkdtemp(prefix="media-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        path = write_wav(folder / "s.wav", np.zeros(480, dtype=np.float32), 48000, subtype="PCM_24")
        os.chown(path, 0, MEDIA_GID)
        assert _read_as_server(path) == 0
        # The check can fail: the temp file's own mode (0600) is what nginx once got.
        path.chmod(0o600)
        assert _read_as_server(path) != 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
