import subprocess

import sassnet_tf
from sassnet_tf.utils.provenance import code_version


def test_code_version_is_the_commit_marked_when_files_changed_else_the_package_version(tmp_path):
    assert code_version(str(tmp_path)) == f"sassnet_tf {sassnet_tf.__version__}"  # not a git checkout

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "first")
    commit = git("rev-parse", "--short=12", "HEAD")
    assert code_version(str(tmp_path)) == f"git {commit}"
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert code_version(str(tmp_path)) == f"git {commit}"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(str(tmp_path)) == f"git {commit}+changes"
