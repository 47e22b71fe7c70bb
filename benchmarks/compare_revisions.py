"""The zoo's pretraining step at two git revisions, alternated A B A B in fresh processes: is a change faster?

Each revision is checked out into a temporary `git worktree`; every round runs `benchmarks.pretrain_throughput`'s
own zoo worker (build, warm-up, timed steps) once from each worktree, in the same order, so slow drift on a shared
machine hits both alike. Prints the step time of every round, the median of each revision, and B / A (below 1:
B is faster). Run it on a quiet machine; the rounds show how noisy it is.

  PYTHONPATH=. python -m benchmarks.compare_revisions --a=HEAD~1 --b=HEAD --size=base --rounds=3
"""

import contextlib
import statistics
import subprocess
import sys
import tempfile

from benchmarks import common, pretrain_throughput


def _git(*args, cwd=common.REPO):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def worktree(revision):
    """A detached checkout of `revision` in a temporary folder (removed afterwards)."""
    commit = _git("rev-parse", "--verify", revision + "^{commit}")
    path = tempfile.mkdtemp(prefix="zoo_rev_")
    _git("worktree", "add", "--detach", "--force", path, commit)
    try:
        yield path, commit
    finally:
        _git("worktree", "remove", "--force", path)


def main(argv=None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--a", default="HEAD~1", help="The baseline revision.")
    parser.add_argument("--b", default="HEAD", help="The revision under test.")
    parser.add_argument("--size", default="base", choices=sorted(pretrain_throughput.SIZES))
    parser.add_argument("--precision", default="bfloat16", choices=pretrain_throughput.PRECISIONS)
    parser.add_argument("--xla", default="off", choices=("on", "off"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    dims = pretrain_throughput.TINY if args.tiny else {**pretrain_throughput.SIZES[args.size], **pretrain_throughput.COMMON}
    spec = {"size": "tiny" if args.tiny else args.size, "contender": "zoo", "precision": args.precision, "xla": args.xla,
            "dims": dims, "steps": 2 if args.tiny else args.steps, "warmup": max(1, args.warmup)}
    times = {"a": [], "b": []}
    with worktree(args.a) as (path_a, commit_a), worktree(args.b) as (path_b, commit_b):
        print(f"A = {args.a} ({commit_a[:10]}), B = {args.b} ({commit_b[:10]}); {spec['size']} {args.precision} xla={args.xla}")
        for round_ in range(args.rounds):
            for name, path in (("a", path_a), ("b", path_b)):
                result = common.run_worker(pretrain_throughput.MODULE, spec, args.timeout, args.threads, repo=path)
                times[name].append(result["step_ms"])
                print(f"round {round_ + 1} {name.upper()}: {result['step_ms']:,.1f} ms/step "
                      f"({result['tokens_per_s']:,.0f} tokens/s, loss {result['loss']:.3f})", flush=True)
    a, b = statistics.median(times["a"]), statistics.median(times["b"])
    print(f"median step ms: A {a:,.1f}  B {b:,.1f}  B/A = {b / a:.3f}")
    meta = common.run_metadata(common.command_line("benchmarks.compare_revisions", argv))
    common.write_json(args.json_out, {"meta": meta, "benchmark": "compare_revisions", "a": commit_a, "b": commit_b,
                                      "spec": spec, "step_ms": times, "ratio_b_over_a": b / a})
    return 0


if __name__ == "__main__":
    sys.exit(main())
