"""The bundle's own ustar writer gives the very bytes tarfile's USTAR_FORMAT gives."""

import io
import tarfile

import pytest

from vmm.sandbox import bundle as B


def tarfile_reference(members, argv, env, opts, exec_name):
    """What build_bundle wrote with tarfile before it had its own writer."""
    out = io.BytesIO()

    def add(tar, name, data, mode=0o644, mtime=0):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, mtime
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, ".vmm/argv", B._strings(argv, "argv"))
        add(tar, ".vmm/envp", B._strings(B._env_list(env), "environment"))
        add(tar, ".vmm/exec", ("/" + exec_name).encode())
        add(tar, ".vmm/opts", B._opts_text(opts))
        made = set()
        for name, (data, mode, mtime) in sorted(members.items()):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            add(tar, name, data, mode, mtime)
    return out.getvalue()


LONG_DIR = "/".join(["d" * 40] * 3)  # 122 bytes: the name must split into prefix and name


@pytest.mark.parametrize("files", [
    {},
    {"/data/in.txt": b"alpha\n", "/data/empty": b"", "/x": bytes(range(256)) * 3},
    {f"/{LONG_DIR}/file.bin": b"z" * 513, "/a/b/c/d": b"1"},
    {"/caf\u00e9/\u00fcber": b"utf-8 names"},
])
def test_same_bytes_as_tarfile(files):
    program = b"\x7fELF" + bytes(600)
    argv, env, opts = ["prog", "a b", ""], {"PATH": "/bin", "K": "v=w"}, {"clock": 5, "seed": 7, "trace": 1}
    ours = B.build_bundle(program, argv, env, files, opts)
    members = {B._guest_path(g): (d, 0o644, 0) for g, d in files.items()}
    members.setdefault("prog", (program, 0o755, 0))
    assert ours == tarfile_reference(members, argv, env, opts, "prog")
    with tarfile.open(fileobj=io.BytesIO(ours)) as tar:  # and tarfile reads it back
        names = tar.getnames()
    assert names[:4] == [".vmm/argv", ".vmm/envp", ".vmm/exec", ".vmm/opts"]


def test_name_that_cannot_split_is_refused():
    with pytest.raises(B.BundleError, match="too long"):
        B.build_bundle(b"\x7fELF\0", ["p"], {}, {"/" + "n" * 150: b""}, {"clock": 1})
