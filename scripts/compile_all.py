"""Does every .py file under a folder compile on this interpreter? Prints each that does not, exits 1.

Usage: pythonX.Y scripts/compile_all.py gptlearn  (scripts/check_pythons.sh and tests/test_python_versions.py)
"""
import pathlib
import sys

bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    try:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as e:
        bad.append(f"{path}:{e.lineno}: {e.msg}")
if bad:
    sys.exit("does not compile:\n  " + "\n  ".join(bad))
