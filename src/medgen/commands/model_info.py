"""``medgen model-info``: what a model family has; for HA-GAN, parameters and shapes of every block.

    medgen model-info --preset paper --size 256
    medgen model-info --preset paper --size 256 --recipe paper   # the published networks exactly
    medgen model-info --preset tiny --size 64 --json
    medgen model-info --family classifier --preset tiny --size 32
    medgen model-info --list
"""

from __future__ import annotations

import argparse
import json

HELP = "show a model family (default HA-GAN): its presets, networks, hyper-parameters, parameters and shapes"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model-info",
        help=HELP,
        description=(
            "Build the HA-GAN generator (G^A, G^L, G^H), discriminator (D^H, D^L) and encoder "
            "(E^H, E^G) for a preset and size, without allocating memory, and print each block's "
            "parameter count and input/output shapes (batch dimension omitted; shapes are "
            "channels, X, Y, Z with Z the slab/depth axis)."
        ),
        epilog="Exit codes: 0 success, 2 invalid configuration.",
    )
    p.add_argument("--family", default="hagan", help="model family from the registry (default hagan)")
    p.add_argument("--list", action="store_true", help="list the registered families and exit")
    p.add_argument("--preset", default=None,
                   help="model preset (default: the family's; HA-GAN: paper = the published architecture, small, compact, tiny)")
    p.add_argument("--size", type=int, default=256, metavar="S", help="output edge length, power of two 32-512 (default 256)")
    p.add_argument("--width", type=float, default=None, help="channel-width multiplier (overrides the preset)")
    p.add_argument("--latent-dim", type=int, default=None, metavar="N", help="length of z (overrides the preset)")
    p.add_argument("--num-classes", type=int, default=None, metavar="K", help="classes for the conditional model (0 = unconditional)")
    p.add_argument("--autoencoder", default=None, metavar="RUN",
                   help="ldm: the trained `--family ldm-autoencoder` run the model would diffuse the latents of")
    p.add_argument("--generator", default=None, metavar="RUN",
                   help="fanogan: the trained `--family hagan` run whose generator and discriminator the model uses")
    p.add_argument("--high-width", type=float, default=None,
                   help="hagan: channel-width multiplier of G^H's hidden layers alone (default: --width)")
    p.add_argument("--low-d-width", type=float, default=None,
                   help="hagan: channel-width multiplier of the low-resolution discriminator D^L alone (default: --width)")
    p.add_argument("--lowres-factor", type=int, default=None, metavar="F", help="full / low resolution ratio (paper 4)")
    p.add_argument("--slab-fraction", type=float, default=None, metavar="FRAC", help="training slab depth / volume depth (paper 0.125)")
    p.add_argument("--norm-groups", type=int, default=None, metavar="G", help="GroupNorm groups (overrides the preset)")
    p.add_argument("--no-lowres", action="store_true", help="ablation without the low-resolution branch (no G^L, D^L)")
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help="the family's named settings (hagan: paper = the published networks exactly, without "
                        "medgen's minibatch-std channel; ct = D with CT's lung and bone windows as input channels)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _shape(shape: list[int], num_classes: int = 0) -> str:
    if shape:
        return "×".join(map(str, shape))
    return f"logit + {num_classes} class logits" if num_classes else "logit"


def _family_info(family, cfg) -> dict:
    """Family-agnostic description: presets, networks (parameters), losses, hyper-parameters, abilities."""
    import torch

    hp = family.hparams_from_dict({})
    with torch.device("meta"):
        nets = family.build(cfg, hp, torch.device("meta"))
    return {
        "family": family.name,
        "summary": family.summary,
        "presets": list(family.presets),
        "config": cfg.to_dict(),
        "networks": {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()},
        "losses": [f"loss_{n}" for n in family.loss_names(cfg, hp)],
        "hyper_parameters": hp.to_dict(),
        "ema_of": family.ema,
        "data_keys": list(family.data_keys(cfg)),
        "uses_labels": bool(family.uses_labels(cfg)),
        "benchmark": family.bench is not None,
    }


def _print_family(info: dict) -> None:
    print(f"family {info['family']}: {info['summary']}")
    print(f"  presets: {', '.join(info['presets'])}")
    print(f"  config: {', '.join(f'{k}={v}' for k, v in info['config'].items())}")
    nets = ", ".join(f"{k} {v / 1e6:.3f}M" for k, v in info["networks"].items())
    print(f"  networks (parameters): {nets}")
    print(f"  logged losses: {', '.join(info['losses'])}")
    print(f"  hyper-parameters (defaults): {', '.join(f'{k}={v}' for k, v in info['hyper_parameters'].items())}")
    print(f"  EMA of: {info['ema_of'] or '-'}; data keys: {', '.join(info['data_keys'])}; "
          f"labels: {'yes' if info['uses_labels'] else 'no'}; medgen bench: {'yes' if info['benchmark'] else 'no'}")


def run(args: argparse.Namespace) -> int:
    from medgen.families import registry

    if args.list:
        for name, fam in registry.FAMILIES.items():
            print(f"{name:<16} {fam.summary}")
        return 0
    family = registry.get(args.family)
    if family.name != "hagan":
        cfg = family.model_config(args.preset or family.default_preset, args.size,
                                  width=args.width, num_classes=args.num_classes, autoencoder_run=args.autoencoder,
                                  generator_run=args.generator)
        info = _family_info(family, cfg)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_family(info)
        return 0
    from medgen.core.errors import UsageError
    from medgen.families.hagan import get_preset
    from medgen.families.hagan.summary import summary

    args.preset = args.preset or family.default_preset
    if args.recipe is not None and args.recipe not in family.recipes:
        raise UsageError(f"--recipe {args.recipe}: family {family.name!r} has recipes: {', '.join(family.recipes)}")
    # a recipe's named CT windows in the units of medgen's default CT preprocessing (only their number
    # changes the networks)
    from medgen.families.hagan.config import DEFAULT_CT_INFO, options_from_data

    recipe = options_from_data(DEFAULT_CT_INFO, dict(family.recipes[args.recipe]["model"])) if args.recipe else {}
    cfg = get_preset(
        args.preset,
        args.size,
        width=args.width,
        high_width=args.high_width,
        low_d_width=args.low_d_width,
        latent_dim=args.latent_dim,
        num_classes=args.num_classes,
        lowres_factor=args.lowres_factor,
        slab_fraction=args.slab_fraction,
        norm_groups=args.norm_groups,
        use_lowres=False if args.no_lowres else None,
        **recipe,
    )
    info = summary(cfg)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0

    c = info["config"]
    print(
        f"HA-GAN preset {args.preset}: size {c['size']}³, latent {c['latent_dim']}, width {c['width']:g}"
        + (f" (G^H {cfg.high_width:g})" if cfg.high_width is not None else "")
        + (f" (D^L {cfg.low_d_width:g})" if cfg.low_d_width is not None else "") +
        f", classes {c['num_classes']}, low-res factor {c['lowres_factor']}, slab {cfg.slab_len} slices "
        f"({cfg.slab_len_lowres} of A), slab context {cfg.slab_context}, minibatch std {cfg.minibatch_std or 'none'}"
        + (f" ({cfg.minibatch_std_channels} channels)" if cfg.minibatch_std and cfg.minibatch_std_channels > 1 else "")
        + (f", class conditioning {cfg.class_conditioning}" if cfg.num_classes else "")
        + (f", D's input windows {', '.join(f'[{lo:g}, {hi:g}]' for lo, hi in cfg.d_windows)}" if cfg.d_windows else "")
    )
    rows = [("block", "class", "params (M)", "input", "output")]
    for sym, b in info["blocks"].items():
        rows.append((sym, b["class"], f"{b['params'] / 1e6:.3f}", _shape(b["input_shape"]), _shape(b["output_shape"], c["num_classes"] if cfg.class_conditioning == "ac" else 0)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, r in enumerate(rows):
        print("  ".join(v.ljust(w) if j in (0, 1) else v.rjust(w) for j, (v, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    t = info["totals"]
    print(
        f"total: G {t['G'] / 1e6:.2f}M  D {t['D'] / 1e6:.2f}M  E {t['E'] / 1e6:.2f}M  "
        + (f"C {t['C'] / 1e6:.2f}M  " if "C" in t else "") +
        f"all {t['all'] / 1e6:.2f}M ({t['all']:,} parameters)"
    )
    hp = family.hparams_from_dict(dict(family.recipes[args.recipe]["hparams"]) if args.recipe else {}).to_dict()
    which = f"recipe {args.recipe}" if args.recipe else "defaults"
    print(f"hyper-parameters ({which}; medgen train --hparam NAME=VALUE): {', '.join(f'{k}={v}' for k, v in hp.items())}")
    return 0
