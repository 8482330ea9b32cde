"""Verbs ``infer``, ``merge`` and ``eval``: argument parsing and printing only.

The recipes are ``cad_recode.inference``, ``cad_recode.merge`` and ``cad_recode.evaluate``.
The root scripts ``inference_lora.py`` and ``merge_lora_weights.py`` call these
verbs with the guide's flags.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cad_recode import defaults
from cad_recode.cli.flags import add_output_flag, add_sandbox_flags
from cad_recode.errors import UsageError, escape_controls
from cad_recode.geometry.pose import DEFAULT_POSE_BUDGET, TURNED_BOX_RATIO
from cad_recode.geometry.robustness import CONDITION_NAMES
from cad_recode.inference.refine import DEFAULT_MAX_EVALUATIONS as DEFAULT_REFINE_EVALUATIONS
from cad_recode.inference.decoding import POSE_MODES, SAMPLING_MODES, SAMPLING_TEMPERATURE, Decoding
from cad_recode.model.constrained import DEFAULT_GRAMMAR, GRAMMAR_HELP


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer",
        help="reconstruct a CadQuery program from a point cloud, mesh, STEP file or built-in shape",
        description="Reconstruct a part. Loads LORA_PATH/merged_model/ when it exists (says so), else the "
        "adapter on top of --base_model. With --output part.py it writes part.py, part.stl, part.step, "
        "part.png (input beside reconstruction) and part.json (validity, CD, timings, tokens); without it "
        "the program is printed. Several inputs (files or folders) need --output_dir.",
    )
    _add_model_arguments(p, model_flag="--base_model")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--point_cloud_file", nargs="+", metavar="F",
                       help="point cloud (.npy .npz .ply .pcd .xyz .txt .pts .csv .asc), mesh (.stl .obj .ply .off "
                       ".glb) or STEP; several files or folders for batch mode")
    group.add_argument("--shape", metavar="NAME", help="a built-in example shape (its program is the ground truth); "
                       "'list' lists them")
    p.add_argument("--ground_truth", metavar="F", help="ground truth mesh, STEP or .py program: adds CD and IoU to the report")
    p.add_argument("--output", metavar="F.py", help="write the program and the .stl .step .png .json beside it")
    p.add_argument("--output_dir", metavar="DIR", help="batch mode: one set of outputs per input in DIR")
    _add_decoding_arguments(p)
    p.add_argument("--restore_units", action="store_true",
                   help="map the solid back to the input's own scale and position (x_model / 100 -> normalized -> input)")
    p.add_argument("--no_png", action="store_true", help="skip the picture")
    p.set_defaults(func=cmd_infer)

    p = subparsers.add_parser(
        "merge",
        help="merge a LoRA adapter and its projector into a full-precision model",
        description="Load BASE_MODEL without quantization, load the adapter (QLoRA ones too), merge, and save "
        "config.json, safetensors (sharded when large), tokenizer and generation_config.json to OUTPUT_PATH.",
    )
    p.add_argument("--base_model", help="base model name or folder (default: the one the adapter recorded)")
    p.add_argument("--lora_path", required=True, help="folder with adapter_config.json + adapter_model.safetensors")
    p.add_argument("--output_path", required=True, help="folder to write the merged model to")
    p.add_argument("--dtype", default="float32", help="dtype of the saved weights: float32 (default), bfloat16, float16")
    p.add_argument("--max_shard_size", default="2GB", help="safetensors shard size (default 2GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT_PATH")
    p.set_defaults(func=cmd_merge)

    p = subparsers.add_parser(
        "eval",
        help="evaluate a model with the published protocol (IR, CD x10^3, IoU)",
        description="Best of N per input (chosen against the input points, never the ground truth); writes "
        "per_item.csv, summary.json and each input's program (programs/) to --output_dir and prints a summary "
        "table. --data: a prepared dataset (--split), a folder of .py ground-truth programs, or a folder of meshes.",
    )
    _add_model_arguments(p, model_flag="--model")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--split", default="test", help="split of a prepared dataset (default test)")
    p.add_argument("--limit", type=int, metavar="K", help="evaluate the first K shapes only")
    p.add_argument("--condition", choices=CONDITION_NAMES, default=CONDITION_NAMES[0],
                   help="robustness: perturb every input before inference, the same draw per shape on every rerun: "
                        "rotated (a random rotation of input and ground truth), noise_0.01 / noise_0.02 (Gaussian "
                        "noise, std in normalized units), missing_side (a third of the surface cut away), clean_cloud "
                        "(the clean surface sample as a point cloud), stray_points (0.5 %% more points strewn "
                        "around it); "
                        "default clean. summary.json records it")
    add_output_flag(p, folder=True, old="--out", default="eval_results", metavar="DIR", help="default eval_results")
    _add_decoding_arguments(p)
    p.set_defaults(func=cmd_eval)


def _add_model_arguments(p, model_flag: str) -> None:
    add_sandbox_flags(p)
    p.add_argument(model_flag, dest="base_model", metavar="PATH",
                   help="base model (name or folder), or a merged / full model folder, or a training output_dir")
    p.add_argument("--lora_path", help="training output_dir (merged_model/ preferred) or adapter folder")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="load an extra named adapter (repeatable); needs the base model")
    p.add_argument("--active_adapter", metavar="NAME", help="the adapter to use (default: the first)")
    p.add_argument("--no_merged", action="store_true", help="use the adapter even when merged_model/ exists")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", help="model dtype (default float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--workers", type=int, default=1, help="sandbox worker processes (default 1)")


def _add_decoding_arguments(p) -> None:
    p.add_argument("--num_candidates", type=int, default=1, metavar="N",
                   help="best of N: N programs generated in one batch, each from its own point draw; the closest "
                        "valid solid to the input wins")
    p.add_argument("--sampling", choices=SAMPLING_MODES, default=Decoding.sampling,
                   help="best of N: none (default): every candidate greedy, each on its own point draw (the "
                        "published protocol's best of N); after_first: the first candidate (of each pose under "
                        "--pose auto) greedy, the others sampled at --temperature, so they are other guesses (it "
                        "helps an under-trained model most); all: every candidate sampled")
    p.add_argument("--do_sample", dest="sampling", action="store_const", const="all",
                   help="the same as --sampling all")
    p.add_argument("--temperature", type=float,
                   help=f"of the sampled candidates (default {SAMPLING_TEMPERATURE})")
    p.add_argument("--top_p", type=float, help="of the sampled candidates (default: off)")
    p.add_argument("--max_new_tokens", type=int, default=defaults.MAX_NEW_TOKENS,
                   help=f"longest program in tokens (default {defaults.MAX_NEW_TOKENS})")
    p.add_argument("--runaway_factor", type=float, metavar="F",
                   help="best of N: end a candidate once half of the others finished and it is F times longer "
                        "than the longest of them (default 2; 0: never)")
    p.add_argument("--refine", type=int, nargs="?", const=DEFAULT_REFINE_EVALUATIONS, default=0, metavar="RUNS",
                   help="fit the winner's integer dimensions to the input points, then drop the cuts, unions and "
                        "holes they do not support or hollow a solid they show as a tube, with at most RUNS sandbox "
                        "runs (default "
                        f"{DEFAULT_REFINE_EVALUATIONS} when given; off when not); the report keeps the program as the "
                        "model wrote it")
    p.add_argument("--outline_fit", choices=("on", "off"), default="on",
                   help="with --refine: also fit a sketch-and-extrude program to the input points (an outline with "
                        "its through holes, on each base plane) and refine that instead when it is clearly closer "
                        "than the model's winner (default on; the report keeps the model's program)")
    p.add_argument("--grammar", choices=("on", "off"), default="on" if DEFAULT_GRAMMAR else "off", help=GRAMMAR_HELP)
    p.add_argument("--pose", choices=POSE_MODES, default=Decoding.pose,
                   help="auto: decode the input under up to --pose_budget orientations (the input's frame, its "
                        "minimum box and principal axes, then their axis turns), the N candidates spread over "
                        "them; the winner is placed back by a final line of its program and the report says "
                        "which pose won. if_turned (default): auto for an input whose box in its own axes is over "
                        f"{TURNED_BOX_RATIO:.2f}x its tightest (it looks turned), else as given. none: the input "
                        "as given")
    p.add_argument("--pose_budget", type=int, default=DEFAULT_POSE_BUDGET, metavar="P",
                   help=f"--pose auto: orientations tried, at most N of them (default {DEFAULT_POSE_BUDGET})")
    p.add_argument("--stray_points", choices=("drop", "keep"), default="drop",
                   help="drop (default): a point cloud's points off on their own, away from its surface (a mesh's "
                        "islands beyond its main body), are dropped before its box is fitted (the report counts "
                        "them); keep: the input is read as given")
    p.add_argument("--seed", type=int, default=0, help="first point-sampling seed (candidate k uses seed + k)")
    p.add_argument("--batch_size", type=int, default=1, help="inputs per generate call (each with N candidates)")


def _parse_adapters(items: list[str]) -> dict[str, str]:
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--adapter {item!r} must look like NAME=PATH")
        if name in named:
            raise UsageError(f"--adapter name {name!r} given twice")
        named[name] = path
    return named


def _load_recoder(args):
    from cad_recode.inference import CADRecoder

    _quiet_loading()
    adapters = _parse_adapters(args.adapter)
    if args.base_model is None and args.lora_path is None and not adapters:
        raise UsageError("give the model: --lora_path (training output_dir) and/or the base / merged model")
    recoder = CADRecoder.from_pretrained(
        args.base_model, args.lora_path, adapters or None, active_adapter=args.active_adapter,
        prefer_merged=not args.no_merged, dtype=args.dtype, device=args.device, sandbox_workers=args.workers,
    )
    print(f"using {recoder.describe()}", file=sys.stderr)
    return recoder


def _quiet_loading() -> None:
    """Per-file weight loading/saving bars of transformers drown the one line that matters."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _decoding(args):
    if args.num_candidates < 1:
        raise UsageError(f"--num_candidates must be >= 1, got {args.num_candidates}")
    runaway = {} if args.runaway_factor is None else {"runaway_factor": args.runaway_factor}
    if args.refine < 0:
        raise UsageError(f"--refine must be >= 0 sandbox runs (0: off), got {args.refine}")
    return Decoding(args.max_new_tokens, args.sampling, args.temperature, args.top_p, **runaway,
                    refine_evaluations=args.refine, outline_fit=args.outline_fit == "on",
                    grammar=args.grammar == "on", pose=args.pose,
                    pose_budget=args.pose_budget, drop_stray_points=args.stray_points == "drop")


def _collect_inputs(items: list[str]) -> list[Path]:
    """Every input file (folders expanded), each checked (exists, known extension) before the model loads."""
    from cad_recode.errors import InputError
    from cad_recode.geometry.loaders import SUPPORTED_SUFFIXES, check_input_file

    found = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not files:
                raise InputError(f"{path}: holds no point cloud, mesh or STEP file ({' '.join(SUPPORTED_SUFFIXES)})")
            found += files
        else:
            found.append(check_input_file(path))
    return found


def _check_ground_truth(path: str) -> None:
    from cad_recode.geometry.load_shape import is_program, read_program
    from cad_recode.geometry.loaders import check_input_file

    if is_program(path):
        read_program(path, "ground truth program")
    else:
        check_input_file(path)


class _Stages:
    """Stage lines on stderr for a single part ("infer: [  4.1s] generating ..."), time since the start."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._start = self._clock()

    def __call__(self, text: str) -> None:
        print(escape_controls(f"infer: [{self._clock() - self._start:6.1f}s] {text}"), file=sys.stderr, flush=True)


def _line(rec) -> str:
    if not rec.valid:
        return f"{rec.input_name}: INVALID ({rec.reason[:160]})"
    text = f"{rec.input_name}: valid, CD to input {rec.cd_input:.3f}"
    if rec.truth is not None and rec.truth.cd is not None:
        iou = "n/a" if rec.truth.iou is None else f"{rec.truth.iou * 100:.1f}%"
        text += f", CD to ground truth {rec.truth.cd:.3f}, IoU {iou}"
    if rec.winning_pose is not None:
        text += f", pose {rec.winning_pose}"
    if rec.noisy_input:
        text += f", a noisy scan (noise {rec.input_noise:.4f}): boxed by its smoothed points"
    if rec.input_stray_points:
        text += f", {rec.input_stray_points} stray points apart from the surface dropped"
    if rec.input_stray_islands:
        text += f", {rec.input_stray_islands} mesh islands beyond the part dropped"
    if rec.looks_turned and rec.winning_pose is None:  # read as given (--pose none)
        text += (f", the part looks turned from the axes (its box is {rec.input_turned:.2f}x its tightest): "
                 "try --pose auto")
    elif rec.looks_turned:
        text += f" (the part looked turned: its box is {rec.input_turned:.2f}x its tightest)"
    if rec.input_warning:
        text += f"; warning: {rec.input_warning}"
    text += f" ({rec.num_valid_candidates}/{len(rec.candidates)} candidates valid"
    if rec.refinement is not None:
        text += f"; {rec.refinement.describe()}"
    return text + ")"


def cmd_infer(args) -> int:
    from cad_recode.geometry.shapes import EXAMPLE_SHAPES

    if args.shape == "list":
        print("\n".join(EXAMPLE_SHAPES))
        return 0
    inputs, targets, decoding = _plan_infer(args)
    if args.output_dir:
        with _load_recoder(args) as recoder:
            return _infer_batch(args, recoder, inputs, targets, decoding)
    from cad_recode.inference.inputs import load_input

    stage = _Stages()
    source = None
    if inputs:  # read (and refuse a bad file) before the model loads
        stage(f"reading {inputs[0]}")
        source = load_input(inputs[0])
    stage("loading the model")
    with _load_recoder(args) as recoder:
        return _infer_one(args, recoder, source, targets[0] if targets else None, decoding, stage)


def _plan_infer(args) -> tuple[list[Path], list[Path], object]:
    """Every check that needs no model: flags, input files, ground truth, output locations."""
    from cad_recode.inference.batch import SUMMARY_NAME
    from cad_recode.atomic import check_writable

    inputs = _collect_inputs(args.point_cloud_file) if args.point_cloud_file else []
    batch = len(inputs) > 1 or (args.point_cloud_file and any(Path(i).is_dir() for i in args.point_cloud_file))
    if batch and not args.output_dir:
        raise UsageError(f"{len(inputs)} inputs need --output_dir (one set of outputs per input)")
    if args.output and args.output_dir:
        raise UsageError("give --output (one input) or --output_dir (batch), not both")
    if args.shape and args.ground_truth:
        raise UsageError("--shape brings its own ground truth; drop --ground_truth")
    if args.shape:
        from cad_recode.geometry.shapes import example_program

        example_program(args.shape)  # unknown names fail before the model loads
    if args.ground_truth:
        _check_ground_truth(args.ground_truth)
    decoding = _decoding(args)
    targets = []
    if args.output_dir:
        out = Path(args.output_dir)
        names = [_output_stem(p) for p in inputs] if inputs else [args.shape]
        targets = [out / f"{name}.py" for name in _unique(names)]
        check_writable(out / SUMMARY_NAME)
    elif args.output:
        targets = [Path(args.output)]
    for target in targets[:1]:
        check_writable(target)
    return inputs, targets, decoding


def _infer_one(args, recoder, source, target: Path | None, decoding, stage) -> int:
    """One part, stage lines on stderr; a bad input is an error (exit 2), no valid program exit 1."""
    from cad_recode.inference.export import output_paths
    from cad_recode.inference.inputs import shape_input

    truth = args.ground_truth
    if args.shape:
        stage(f"building the built-in shape {args.shape!r} in the sandbox")
        source, truth = shape_input(args.shape, recoder.sandbox)
    stage(f"encoding {source[0]}: {args.num_candidates} point draw{'s' if args.num_candidates > 1 else ''}"
          + (f", ground truth {truth if isinstance(truth, str) else truth[0]}" if truth else ""))
    item = recoder.encode_input(source, args.num_candidates, args.seed, truth, decoding)
    rec = recoder.reconstruct_encoded([item], args.num_candidates, seed=args.seed, decoding=decoding,
                                      restore_units=args.restore_units, on_stage=stage)[0]
    if target is not None:
        stage(f"writing {output_paths(target)['py']} and the files beside it")
        recoder.save(rec, target, picture=not args.no_png)
        print(escape_controls(f"{_line(rec)} -> {output_paths(target)['py']}"), file=sys.stderr)
    else:
        print(rec.code if rec.valid else f"# INVALID: {escape_controls(rec.reason)}")
        print(escape_controls(_line(rec)), file=sys.stderr)
    return 0 if rec.valid else 1


def _infer_batch(args, recoder, inputs: list[Path], targets: list[Path], decoding) -> int:
    """Each input written as it finishes; a failed one is a row of summary.csv; exit 1 when any failed."""
    from tqdm.auto import tqdm

    from cad_recode.inference.batch import SUMMARY_NAME, run_batch
    from cad_recode.inference.inputs import shape_input

    if args.shape:
        shape, truth = shape_input(args.shape, recoder.sandbox)
        sources, truths = [shape], [truth]
    else:
        sources, truths = inputs, [args.ground_truth] * len(inputs)

    def done(row, rec) -> None:
        text = _line(rec) if rec is not None and row.status != "error" else f"{row.input}: ERROR ({row.reason[:200]})"
        tqdm.write(escape_controls(text + (f" -> {row.output}" if row.output else "")), file=sys.stderr)

    summary = run_batch(recoder, sources, targets, Path(args.output_dir) / SUMMARY_NAME,
                        num_candidates=args.num_candidates, ground_truths=truths, restore_units=args.restore_units,
                        seed=args.seed, decoding=decoding, batch_size=args.batch_size, picture=not args.no_png,
                        on_done=done, progress="infer")
    valid = len(summary.rows) - summary.failed
    print(f"{valid} of {len(summary.rows)} inputs valid, {summary.failed} failed; see {summary.path}", file=sys.stderr)
    return 0 if summary.failed == 0 else 1


def _unique(names: list[str]) -> list[str]:
    """Each name once: a repeat gets the first ``_N`` that no other name has (``a.obj a.xyz a_1.obj`` ->
    ``a a_2 a_1``), compared without case, so no output overwrites another on any file system."""
    own = {name.casefold() for name in names}
    taken, out = set(), []
    for name in names:
        unique, count = name, 0
        while unique.casefold() in taken or (unique != name and unique.casefold() in own):
            count += 1
            unique = f"{name}_{count}"
        taken.add(unique.casefold())
        out.append(unique)
    return out


def _output_stem(path: Path) -> str:
    """``path``'s stem as an output name: a control character (an escape sequence, a newline) becomes '_'."""
    return "".join("_" if c != escape_controls(c) else c for c in path.stem)


def cmd_merge(args) -> int:
    from cad_recode.merge import merge_adapter

    _quiet_loading()
    report = merge_adapter(args.base_model, args.lora_path, args.output_path, dtype=args.dtype,
                           max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    print(report.summary())
    return 0


def cmd_eval(args) -> int:
    from cad_recode.evaluate import evaluate

    from cad_recode.atomic import check_writable

    decoding = _decoding(args)
    check_writable(args.output_dir, folder=True, what="output folder")  # before the model and every shape
    with _load_recoder(args) as recoder:
        report = evaluate(recoder, args.data, split=args.split, num_candidates=args.num_candidates, limit=args.limit,
                          out_dir=args.output_dir, decoding=decoding, batch_size=args.batch_size, seed=args.seed,
                          condition=args.condition)
    print(report.table())
    if report.skipped:
        print(f"{len(report.skipped)} ground-truth shapes skipped (see {report.paths['csv']})", file=sys.stderr)
    unread = report.settings.get("unread_meshes")
    if unread:
        print(escape_controls(f"{unread} mesh file{'s' if unread > 1 else ''} beside the programs in {args.data} "
                              "not read: a folder that holds .py programs is evaluated as programs"), file=sys.stderr)
    print(f"wrote {report.paths['csv']}, {report.paths['json']} and each input's program under "
          f"{report.paths['programs']}/", file=sys.stderr)
    return 0
