"""dimo's command line.

    python -m core.run [COMMAND] [key=value ...]

Commands:
    train (default)  train with the selected method; with no arguments: method=dimo teacher=digits,
                     which pre-trains the digits teacher if none is cached, distils a one-step student,
                     evaluates teacher (1, 2, 4, 8, 16 steps) and student (1 step) and prints a table
    plugins          list installed plugins and recipes: kind, name, distribution, version
    show-config      print the resolved config (and its hash) without running; each value's comment says where
                     it comes from: default, recipe TEACHER/NAME, file PATH or command line
    generate         sample from a trained student: checkpoint=<run folder> n=64 [out=grid.png] [seed=0]
    evaluate         evaluate a trained student anew: checkpoint=<run folder> [eval.metrics=[accuracy] ...]
                     [config=eval.yaml] [evaluator=NAME evaluator.<option>=...] [device=cpu]; the records go
                     to a new evaluation-N.json in the run folder (never over an older one)

Keys:
    method=NAME, teacher=NAME, divergence=NAME, ...   select a plugin
    method.cfg_scale=2, teacher.checkpoint=PATH, ...  set a field of the selected plugin
    trainer.steps=100, trainer.zero_stage=2, ...      core options (trainer.*, eval.*)
    config=run.yaml                                   a YAML file of sections (command-line keys refine it)
    recipe=NAME, recipe=TEACHER/NAME, recipe=none     the tuned values applied under config= and the command
                                                      line (default: the teacher x method recipe, if any)

Bad input (config, paths, files) exits with code 2 and a one-paragraph message naming the field, the value
and what is allowed; a training stopped by non-finite losses or gradients (trainer.on_nonfinite=stop) exits
with code 3.
Environment: DIMO_DISABLE_PLUGIN_AUTOLOAD=1 loads built-in plugins only; DIMO_DISABLED_PLUGINS=a,b blocks
entry points by name; DIMO_CACHE moves the cache of pre-trained embedded teachers; OMP_NUM_THREADS=N sets torch's
CPU threads per process (default: the cores available to the process, shared among the processes of a launcher).
"""
from __future__ import annotations

import os
import sys

from core.errors import UserError

COMMANDS = ("train", "plugins", "show-config", "generate", "evaluate")


def cmd_plugins(args: list[str]) -> int:
    from registry import get_registry
    reg = get_registry()
    rows = [(i.kind, i.name, i.distribution, i.version, i.plugin) for i in reg.all()]
    rows += [("recipe", r.name, r.distribution, r.version, r.plugin) for _, r in sorted(reg.recipes.items())]
    head = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "ENTRY POINT")
    widths = [max(len(str(r[c])) for r in rows + [head]) for c in range(5)]
    for r in [head] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    for f in reg.failures:
        print(f"FAILED  {f.plugin} ({f.distribution}): {f.error}")
    return 0


def cmd_show_config(args: list[str]) -> int:
    from core.config import config_hash, resolve_with_sources, to_annotated_yaml
    resolved, sources, recipe = resolve_with_sources(args)
    print(f"# recipe: {recipe.describe() if recipe else 'none'}")
    print(to_annotated_yaml(resolved, sources), end="")
    print(f"# config hash: {config_hash(resolved)}")
    return 0


def cmd_train(args: list[str]) -> int:
    from core.config import resolve
    from core.engine import run_dir_for
    from core.errors import check_writable_dir
    from core.pipeline import main_job
    resolved = resolve(args)
    check_writable_dir(run_dir_for(resolved), "trainer.output_dir")
    main_job(resolved)
    return 0


def cmd_generate(args: list[str]) -> int:
    from core.generate import generate_command
    return generate_command(args)


def cmd_evaluate(args: list[str]) -> int:
    from core.evaluate import evaluate_command
    return evaluate_command(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The deepspeed launcher appends --local_rank=N; the rank is also in the environment, which we use.
    argv = [a for a in argv if not a.startswith(("--local_rank", "--local-rank"))]
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__.strip())
        return 0
    command = "train"
    if argv and "=" not in argv[0]:
        command = argv.pop(0)
        if command not in COMMANDS:
            import difflib
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            print(f"dimo: unknown command '{command}'.{hint} Valid commands: {', '.join(COMMANDS)}.",
                  file=sys.stderr)
            return 2
    from core import distributed
    distributed.quiet_startup()
    distributed.configure_threads()
    handler = {"train": cmd_train, "plugins": cmd_plugins, "show-config": cmd_show_config,
               "generate": cmd_generate, "evaluate": cmd_evaluate}[command]
    try:
        return handler(argv)
    except UserError as exc:
        print(f"dimo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.filename is None and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                                                         NotADirectoryError, FileExistsError)):
            raise   # not a file-system problem of the user's: keep the traceback
        where = f" '{exc.filename}'" + (f" -> '{exc.filename2}'" if exc.filename2 else "") if exc.filename else ""
        print(f"dimo: error: file system:{where}: {exc.strerror or exc} (check the path, its permissions and "
              f"free space)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dimo: interrupted; the last complete checkpoint is kept (resume with trainer.resume=auto)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    import warnings
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before torch loads OpenMP: idle threads sleep instead of spinning, so a busy neighbour on the same cores does
    # not slow each parallel region tenfold (docs/guide.md, "CPU threads").
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # DeepSpeed's ZeRO-3 calls torch collectives that torch marks deprecated: noise, not the user's concern.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.distributed.*")
    from core import distributed
    distributed.exit_process(main())   # in-process callers of main() keep their process group
