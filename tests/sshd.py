"""A real OpenSSH server on 127.0.0.1 for the tests of DVC's SSH remote.

It runs as the current user from a temporary config: fresh host and user keys, key
authentication only, a free port. (DVC's SSH filesystem, sshfs, does not check host keys:
it connects with asyncssh's ``known_hosts=None``, so no known_hosts file is needed.)
Tests that need it skip when ``/usr/sbin/sshd`` is missing; CI installs Debian's
openssh-server (see ``.ci/run``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path(os.environ.get("MEDPIPE_TEST_SSHD", "/usr/sbin/sshd"))  # sshd wants an absolute path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_sshd() -> None:
    """Skip the calling test when no OpenSSH server can be started here."""
    if not SSHD.is_file() or shutil.which("ssh-keygen") is None:
        pytest.skip(f"OpenSSH server not installed ({SSHD}); "
                    "apt-get install openssh-server (CI installs it)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        # sshd running as root insists on its privilege-separation directory.
        try:
            Path("/run/sshd").mkdir(mode=0o755, parents=True)
        except OSError as e:
            pytest.skip(f"sshd needs /run/sshd and it cannot be created: {e}")


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True)
    return path


@dataclass
class SSHServer:
    """A running sshd; ``key`` is a user key it accepts, ``other_key`` one it does not."""

    host: str
    port: int
    user: str
    key: Path
    other_key: Path
    proc: subprocess.Popen
    log: Path

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.host}:{self.port}{Path(path).as_posix()}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_sshd(root: Path) -> SSHServer:
    """Start sshd on a free port of 127.0.0.1 with everything it needs under ``root``."""
    require_sshd()
    root.mkdir(parents=True, exist_ok=True)
    host_key = keygen(root / "host_ed25519", "medpipe-test-host")
    user_key = keygen(root / "user_ed25519", "medpipe-test-user")
    other_key = keygen(root / "other_ed25519", "medpipe-test-stranger")
    authorized = root / "authorized_keys"
    shutil.copy(user_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    user = pwd.getpwuid(os.getuid()).pw_name
    port = free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",  # the temporary directories are not the user's private home
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        "",
    ]))
    log = root / "sshd.log"
    # -D: stay in the foreground (a child we can stop); -e: log to stderr (our file).
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on port {port}:\n{log.read_text()}")
            time.sleep(0.1)
    return SSHServer("127.0.0.1", port, user, user_key, other_key, proc, log)
