"""A cgroup v2 of the jail's own, with memory.max and cpu.max (--jail-memory, --jail-cpus)."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .libc import read_text, write_text


class Cgroup:
    """A cgroup v2 child of our own, with memory.max / cpu.max; set up from the host's view."""

    CPU_PERIOD_US = 100_000

    @staticmethod
    def own_cgroup() -> str:
        """This process's cgroup v2 directory, from the host's view."""
        root = None
        for line in read_text("/proc/self/mountinfo").splitlines():
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                root = fields[4]
                break
        own = next((line[3:].strip() for line in read_text("/proc/self/cgroup").splitlines() if line.startswith("0::")), None)
        if root is None or own is None:
            raise ConfigError("--jail-memory/--jail-cpus need cgroup v2, which this host does not mount")
        return os.path.normpath(root + own)

    @classmethod
    def prepare(cls, memory_mib: int | None, cpus: float | None, parent: str | None = None) -> Cgroup:
        """A new cgroup under ``parent`` (default: our own), controllers enabled, limits written."""
        parent = parent or cls.own_cgroup()
        wanted = [name for name, value in (("memory", memory_mib), ("cpu", cpus)) if value]
        try:
            offered = read_text(os.path.join(parent, "cgroup.controllers")).split()
            enabled = read_text(os.path.join(parent, "cgroup.subtree_control")).split()
        except OSError as err:
            raise ConfigError(f"--jail-memory/--jail-cpus: cannot read cgroup {parent}: {err.strerror}") from None
        for name in wanted:
            if name not in offered:
                raise ConfigError(f"--jail-{'memory' if name == 'memory' else 'cpus'}: cgroup v2 has no {name} controller "
                                  f"delegated at {parent} (it offers: {' '.join(offered) or 'none'})")
            if name not in enabled:
                try:
                    write_text(os.path.join(parent, "cgroup.subtree_control"), f"+{name}")
                except OSError as err:
                    raise ConfigError(f"cannot enable the {name} controller under {parent}: {err.strerror}") from None
        name = f"vmm-jail-{os.getpid()}"
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
            if memory_mib:
                write_text(os.path.join(path, "memory.max"), str(memory_mib << 20))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    write_text(os.path.join(path, "memory.swap.max"), "0")
            if cpus:
                write_text(os.path.join(path, "cpu.max"), f"{max(int(cpus * cls.CPU_PERIOD_US), 1000)} {cls.CPU_PERIOD_US}")
            self = cls()
            # opened now, with the host's credentials: the waiter writes them from inside its user namespace
            self.procs = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            self.parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.name = name
            return self
        except OSError as err:
            try:
                os.rmdir(path)
            except OSError:
                pass
            raise ConfigError(f"cannot set up cgroup {path}: {err.strerror}") from None

    def adopt(self, pid: int) -> None:
        os.write(self.procs, str(pid).encode())

    def remove(self) -> None:
        try:
            os.rmdir(self.name, dir_fd=self.parent_fd)
        except OSError:
            pass


