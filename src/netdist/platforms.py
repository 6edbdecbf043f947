"""Worker platforms: the interpreter, OS and architecture a lock of wheels is resolved for.

A worker reports its platform in Hello; the server resolves a job script's
dependencies once per platform and names the wheels of the worker's platform
in its leases. The key (``cp311-linux-x86_64-glibc2.36``) is what locks are
filed under.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import sys

_IMPLEMENTATION_TAGS = {"cpython": "cp", "pypy": "pp"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    implementation: str  # sys.implementation.name: "cpython"
    python: str  # "3.11"
    os: str  # sys.platform: "linux", "darwin", "win32"
    machine: str  # platform.machine(), lower case: "x86_64", "aarch64", "arm64", "amd64"
    os_version: str = ""  # glibc version on Linux ("2.36"), macOS version on darwin ("14.2"); "" unknown

    @property
    def tag(self) -> str:
        """The interpreter tag of wheels: ``cp311``."""
        impl = _IMPLEMENTATION_TAGS.get(self.implementation, self.implementation[:2])
        return impl + self.python.replace(".", "")

    @property
    def key(self) -> str:
        """``cp311-linux-x86_64-glibc2.36``: what decides which wheels run here. The C library's version
        (macOS's major version) is part of it: a wheel built for a newer one does not load on an older one."""
        key = f"{self.tag}-{self.os}-{self.machine}"
        if self.os == "linux" and self.os_version:
            return f"{key}-glibc{self.os_version}"
        if self.os == "darwin" and self.os_version:
            return f"{key}-macos{self.os_version.split('.')[0]}"
        return key

    def to_json_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def pip_target_args(self) -> list[str]:
        """``pip download`` options that resolve for this platform rather than pip's own interpreter."""
        impl = _IMPLEMENTATION_TAGS.get(self.implementation, self.implementation[:2])
        args = ["--implementation", impl, "--python-version", self.python]
        if impl == "cp":
            args += ["--abi", self.tag]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        return args

    def platform_tags(self) -> list[str]:
        """The wheel platform tags this platform runs, most specific first (pip expands macOS versions itself)."""
        arch = self.machine
        if self.os == "linux":
            tags = []
            major, _, minor = self.os_version.partition(".")
            if major == "2" and minor.isdigit():
                tags += [f"manylinux_2_{m}_{arch}" for m in range(int(minor), 16, -1)]
                tags.append(f"manylinux2014_{arch}")
                if arch in ("x86_64", "i686"):
                    tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
            return [*tags, f"linux_{arch}"]
        if self.os == "darwin":
            major, _, minor = self.os_version.partition(".")
            version = f"{major}_{minor or 0}" if major.isdigit() else "11_0"
            return [f"macosx_{version}_{arch}", f"macosx_{version}_universal2"]
        if self.os == "win32":
            return [{"amd64": "win_amd64", "x86_64": "win_amd64", "arm64": "win_arm64"}.get(arch, "win32")]
        return [f"{self.os}_{arch}"]


@functools.cache
def this_platform() -> Platform:
    """The platform of the running interpreter (found once: reading the libc version scans the executable)."""
    os_version = ""
    if sys.platform == "linux":
        lib, version = platform.libc_ver()
        os_version = version if lib == "glibc" else ""
    elif sys.platform == "darwin":
        os_version = platform.mac_ver()[0]
    return Platform(
        implementation=sys.implementation.name,
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        os=sys.platform,
        machine=platform.machine().lower(),
        os_version=os_version,
    )
