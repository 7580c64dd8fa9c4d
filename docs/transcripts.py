"""Regenerate the real output that the docs pages show: docs/transcripts/<name>.txt.

Every command below is short (the embedded 8x8 digits and other bundled data, seconds each) and
runs, in order, in one fresh temporary folder (holding a copy of examples/), with the `dgm` and
`python` of the interpreter that runs this script. Each transcript file holds the commands
(`$ ...`) and what they printed; the pages include them with pymdownx.snippets. Timings in the
output ("0.1s", "time 2.2 s") change from run to run; nothing else should, on the same machine
and software.

    PYTHONPATH=src .venv/bin/python docs/transcripts.py            # all of them (a few minutes on 2 cores)
    PYTHONPATH=src .venv/bin/python docs/transcripts.py vae flow   # only these (later ones may need earlier runs)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "transcripts"
REPO = HERE.parent

# Files that commands below make with a line of Python (so that no file appears from nowhere).
DIGITS_TEST_NPY = (
    'python -c "from dgmkit.data import load_dataset; import numpy as np; '
    "np.save('digits-test.npy', load_dataset('digits').test.x.numpy().astype(np.uint8))\""
)
DIGITS_FLIPPED_NPY = (
    'python -c "from dgmkit.data import load_dataset; import numpy as np; '
    "np.save('digits-flipped.npy', load_dataset('digits').test.x.flip(-2).numpy().astype(np.uint8))\""
)
IRIS_CSV = (  # (with the csv module: no pandas needed)
    "python -c \"import csv, sklearn.datasets as d; t = d.load_iris(); w = csv.writer(open('iris.csv', 'w', "
    "newline='')); w.writerow(['sepal_length', 'sepal_width', 'petal_length', 'petal_width', 'species']); "
    'w.writerows([*map(float, r), t.target_names[y]] for r, y in zip(t.data, t.target))"'
)
HOLES_CSV = (
    "printf 'sepal_length,sepal_width,petal_length,petal_width,species\\n5.1,3.5,1.4,0.2,\\n"
    "4.9,3.0,1.4,,setosa\\n4.7,3.2,,0.2,setosa\\n' > holes.csv"
)

T = "dgm train --dataset digits"
V = "--hidden 256 128 --latent-dim 8 --epochs 20 --batch-size 64"  # the demo's VAE, shorter

# name -> commands. A command that ends in `  # fails` is expected to exit with status 1.
TRANSCRIPTS: dict[str, list[str]] = {
    "demo": ["dgm demo"],
    "readme-figures": [  # the README's second block, on the demo's run
        "dgm sample runs/demo -n 16 --out samples.png",
        "dgm interpolate runs/demo --out interpolations.png",
        "dgm eval runs/demo --iw-samples 1000 --limit 100",
    ],
    "vae": [
        f"{T} {V} --warmup 10 --out runs/vae",
        "dgm eval runs/vae --iw-samples 1000",
        "dgm sample runs/vae -n 64 --out samples.png",
        "dgm reconstruct runs/vae --out reconstructions.png",
        "dgm interpolate runs/vae --out interpolations.png",
        "dgm latents runs/vae --out latents.png",
    ],
    "vae-iwae": [
        f"{T} {V} --objective iwae --iw-k 5 --quiet --out runs/iwae",
        "dgm eval runs/iwae --iw-samples 1000",
    ],
    "vae-mog": [
        f"{T} {V} --warmup 10 --prior mog --prior-components 10 --quiet --out runs/mog",
        "dgm eval runs/mog --iw-samples 1000",
        "dgm cluster runs/mog",
    ],
    "vae-vampprior": [
        f"{T} {V} --warmup 10 --prior vampprior --prior-components 50 --pseudo-init data --quiet --out runs/vamp",
        "dgm eval runs/vamp --iw-samples 1000",
        f"{T} {V} --warmup 10 --prior vampprior --prior-components 50 --pseudo-init data --latent-scale "
        "clipped-log-variance --quiet --out runs/vamp-clipped",
        "dgm eval runs/vamp-clipped --iw-samples 1000",
    ],
    "vae-flow": [
        f"{T} {V} --warmup 10 --prior flow --flow maf --posterior iaf --flow-layers 2 --quiet --out runs/flowprior",
        "dgm eval runs/flowprior --iw-samples 1000",
    ],
    "vae-freebits": [
        f"{T} {V} --warmup 10 --free-bits 0.25 --quiet --out runs/fb",
        "dgm eval runs/fb --iw-samples 1000",
    ],
    "vae-tcvae": [
        f"{T} {V} --objective tcvae --tc-weight 6 --out runs/tcvae",
    ],
    "hvae": [
        f"{T} --model hvae --latent-sizes 8 4 --hidden 128 --encoder gated --prior vampprior --prior-components 50 "
        "--epochs 20 --warmup 5 --batch-size 64 --out runs/hvae",
        "dgm eval runs/hvae --iw-samples 500",
        "dgm diagnose runs/hvae --out diagnose.png -n 300",
        f"{T} --model hvae --latent-sizes 8 4 --hidden 128 --encoder gated --prior vampprior --prior-components 50 "
        "--epochs 5 --warmup 5 --batch-size 64 --normalise-gradients --init he --latent-scale clipped-log-variance "
        "--out runs/hvae-reference",
    ],
    "pixelvae": [
        f"{T} --model pixelvae --latent-sizes 8 4 --hidden 128 --encoder gated --prior vampprior --prior-components 50 "
        "--pixelcnn-layers 4 --pixelcnn-channels 32 --epochs 10 --warmup 5 --batch-size 64 --out runs/pixelvae",
        "dgm eval runs/pixelvae --iw-samples 100",
        "dgm sample runs/pixelvae -n 16 --out pixelvae-samples.png",
    ],
    "hvae-residual": [
        f"{T} --model hvae --posterior residual --res-resolutions 4 8 --res-layers 2 2 --res-width 32 "
        "--likelihood categorical --epochs 3 --ema 0.99 --skip-grad-norm 1000 --out runs/vdvae",
        "dgm eval runs/vdvae --iw-samples 100",
    ],
    "dvae": [
        f"{T} --model dvae --latent-dim 8 --latent-classes 4 --objective gumbel-softmax --hidden 128 --epochs 20 "
        "--batch-size 64 --out runs/dvae-gs",
        "dgm eval runs/dvae-gs --iw-samples 500",
        f"{T} --model dvae --latent-dim 8 --latent-classes 4 --objective reinforce --hidden 128 --epochs 20 "
        "--batch-size 64 --quiet --out runs/dvae-rf",
        "dgm eval runs/dvae-rf --iw-samples 500",
        f"{T} --model dvae --latent-dim 8 --latent-classes 4 --objective vimco --iw-k 5 --hidden 128 --epochs 20 "
        "--batch-size 64 --quiet --out runs/dvae-vimco",
        "dgm eval runs/dvae-vimco --iw-samples 500",
    ],
    "helmholtz": [
        f"{T} --model helmholtz --objective wake-sleep --layers 64 32 --epochs 20 --batch-size 64 --lr 3e-3 --out runs/ws",
        "dgm eval runs/ws --iw-samples 1000",
        f"{T} --model helmholtz --objective rws --iw-k 5 --layers 64 32 --epochs 20 --batch-size 64 --lr 3e-3 --quiet "
        "--out runs/rws",
        "dgm eval runs/rws --iw-samples 1000",
        f"{T} --model helmholtz --objective vimco --iw-k 5 --layers 64 32 --epochs 20 --batch-size 64 --lr 3e-3 --quiet "
        "--out runs/vimco",
        "dgm eval runs/vimco --iw-samples 1000",
    ],
    "ppca": [
        f"{T} --model ppca --latent-dim 8 --out runs/ppca",
        "dgm eval runs/ppca",
    ],
    "loglinear": [
        "dgm train --dataset digits-4x4 --model loglinear --states 10 --em-iterations 5 --out runs/ll",
        "dgm eval runs/ll",
    ],
    "ae": [
        f"{T} --model ae --latent-dim 8 --hidden 128 --epochs 3 --out runs/ae",
        "dgm eval runs/ae",
        "dgm reconstruct runs/ae --out ae-reconstructions.png",
    ],
    "wae": [
        f"{T} --model wae --latent-dim 8 --hidden 128 --mmd-weight 10 --epochs 5 --out runs/wae",
        "dgm eval runs/wae",
        "dgm sample runs/wae -n 16 --out wae-samples.png",
    ],
    "vqvae": [
        f"{T} --model vqvae --codes 32 --code-dim 8 --downsample 1 --vq-width 32 --res-blocks 1 --epochs 5 --out runs/vq",
        "dgm eval runs/vq",
        "dgm train --codes-of runs/vq --model arm --arm pixelcnn --likelihood categorical --channels 32 --arm-layers 3 "
        "--epochs 5 --quiet --out runs/vq-prior",
        "dgm eval runs/vq --input code-prior=runs/vq-prior",
        "dgm sample runs/vq --input code-prior=runs/vq-prior -n 16 --out vq-samples.png",
    ],
    "flow": [
        f"{T} --model flow --flow glow --hidden 64 --flow-layers 4 --epochs 3 --out runs/glow",
        "dgm eval runs/glow",
        "dgm sample runs/glow -n 16 --temperature 0.8 --out glow.png",
        f"{T} --model flow --flow realnvp --hidden 64 --flow-layers 3 --epochs 3 --quiet --out runs/realnvp",
        "dgm eval runs/realnvp",
        f"{T} --model flow --flow maf --hidden 128 128 --flow-layers 4 --epochs 3 --quiet --out runs/maf",
        "dgm eval runs/maf",
        f"{T} --model flow --flow nice --hidden 128 128 --flow-layers 4 --epochs 3 --quiet --out runs/nice",
        "dgm eval runs/nice",
        f"{T} --model flow --flow glow --hidden 64 --flow-layers 4 --dequantization variational --epochs 3 --quiet "
        "--out runs/glow-vd",
        "dgm eval runs/glow-vd",
    ],
    "flow-2d": [
        "dgm train --dataset checkerboard --model flow --flow realnvp --hidden 64 64 --flow-layers 6 --epochs 5 "
        "--quiet --out runs/checker",
        "dgm eval runs/checker",
        "dgm density runs/checker --out checker.png",
        "dgm sample runs/checker -n 1000 --out checker-samples.npy",
        "dgm score runs/checker checker-samples.npy --out checker-scores.csv",
    ],
    "arm": [
        f"{T} --model arm --arm pixelcnn --likelihood categorical --channels 32 --arm-layers 5 --epochs 3 "
        "--out runs/pixelcnn",
        "dgm eval runs/pixelcnn",
        "dgm sample runs/pixelcnn -n 16 --out pixelcnn.png",
        "dgm sample runs/pixelcnn -n 16 --naive --out pixelcnn-naive.png",
        f"{T} --model arm --arm causal-conv --likelihood categorical --channels 32 --arm-layers 6 --epochs 3 --quiet "
        "--out runs/causal",
        "dgm eval runs/causal",
        f"{T} --model arm --arm made --likelihood categorical --made-hidden 512 --made-masks 4 --made-random-order "
        "--epochs 3 --quiet --out runs/made",
        "dgm eval runs/made",
    ],
    "compress": [
        DIGITS_TEST_NPY,
        "dgm compress runs/pixelcnn digits-test.npy --out digits-test.dgmz",
        "dgm decompress digits-test.dgmz --run runs/pixelcnn --out digits-back.npy",
        "cmp digits-test.npy digits-back.npy && echo IDENTICAL",
        "dgm decompress digits-test.dgmz --run runs/causal --out x.npy  # fails",
    ],
    "compress-vae": [
        DIGITS_TEST_NPY,
        f"{T} {V} --likelihood categorical --quiet --out runs/vae-categorical",
        "dgm compress runs/vae-categorical digits-test.npy --out digits-bb.dgmz",
        "dgm decompress digits-bb.dgmz --run runs/vae-categorical --out digits-bb.npy",
        "cmp digits-test.npy digits-bb.npy && echo IDENTICAL",
        "dgm eval runs/vae-categorical --iw-samples 1000 | grep -E 'ELBO|NLL|bits/dim'",
        f"{T} {V} --likelihood categorical --prior vampprior --prior-components 50 --pseudo-init data --quiet "
        "--out runs/vamp-categorical",
        "dgm compress runs/vamp-categorical digits-test.npy --out digits-vamp.dgmz",
        "dgm decompress digits-vamp.dgmz --run runs/vamp-categorical --out digits-vamp.npy",
        "cmp digits-test.npy digits-vamp.npy && echo IDENTICAL",
        "dgm train --dataset digits --model hvae --hidden 256 --latent-sizes 8 4 --epochs 20 --batch-size 64 "
        "--likelihood categorical --prior vampprior --prior-components 50 --quiet --out runs/hvae-categorical",
        "dgm compress runs/hvae-categorical digits-test.npy --out digits-hvae.dgmz",
        "dgm decompress digits-hvae.dgmz --run runs/hvae-categorical --out digits-hvae.npy",
        "cmp digits-test.npy digits-hvae.npy && echo IDENTICAL",
    ],
    "score": [
        "dgm score runs/vae digits-test.npy --k 1000 --out scores.csv",
        "head -4 scores.csv",
    ],
    "diffusion": [
        f"{T} --model diffusion --unet-channels 16 32 --unet-blocks 1 --epochs 2 --batch-size 64 --out runs/vdm",
        "dgm eval runs/vdm --time-samples 4",
        "dgm sample runs/vdm -n 16 --steps 50 --out vdm.png",
        f"{T} --model diffusion --process masked --masked-training counts --unet-channels 16 32 --unet-blocks 1 "
        "--epochs 2 --batch-size 64 --quiet --out runs/masked",
        "dgm eval runs/masked",
        "dgm eval runs/masked --orders 4",
    ],
    "m2": [
        f"{T} --model m2 --labels 50 --hidden 256 --latent-dim 8 --labelled-batch 32 --batch-size 64 --epochs 10 "
        "--out runs/m2",
        "dgm eval runs/m2 --iw-samples 200",
    ],
    "adgm": [
        f"{T} --model adgm --skip --labels 50 --hidden 256 256 --latent-dim 8 --aux-dim 8 --labelled-batch 32 "
        "--batch-size 64 --epochs 10 --out runs/sdgm",
        "dgm eval runs/sdgm --iw-samples 200",
    ],
    "m1m2": [
        f"{T} --hidden 256 --latent-dim 8 --epochs 50 --quiet --out runs/m1",
        "dgm train --model m2 --codes-of runs/m1 --likelihood gaussian --labels 50 --labels-seed 1 --hidden 128 "
        "--latent-dim 4 --labelled-batch 32 --batch-size 64 --epochs 100 --lr-schedule exponential --lr-decay 0.5 "
        "--lr-decay-every 40 --lr-min 3e-4 --quiet --out runs/m1m2",
        "grep -o '\"lr\": [0-9.e-]*' runs/m1m2/metrics.jsonl | uniq -c",
        "dgm eval runs/m1m2 --iw-samples 200",
        "dgm train --model m2 --codes-of runs/m1 --latent-draws --active-latents --likelihood gaussian --labels 50 "
        "--hidden 128 --latent-dim 4 --labelled-batch 32 --batch-size 64 --epochs 100 --quiet --out runs/m1m2-draws",
        "python -c \"import json; print(json.load(open('runs/m1m2-draws/config.json'))['data']['units'])\"",
        "dgm eval runs/m1m2-draws --iw-samples 200",
    ],
    "hybrid": [
        f"{T} --model hybrid --flow glow --hidden 32 --flow-layers 2 --epochs 5 --batch-size 64 --out runs/hybrid",
        "dgm eval runs/hybrid",
    ],
    "miwae": [
        "dgm train --dataset breast-cancer --objective miwae --iw-k 20 --latent-dim 10 --hidden 128 128 "
        "--activation tanh --likelihood student-t --missing-rate 0.5 --batch-size 64 --epochs 30 --quiet "
        "--out runs/miwae",
        "dgm eval runs/miwae",
        "dgm impute runs/miwae --k 1000 --baselines mean knn iterative --out breast-filled.npy",
        "dgm train --dataset digits --objective miwae --missing-rate 0.2 --latent-dim 8 --epochs 10 --quiet "
        "--out runs/miwae-digits",
        "dgm reconstruct runs/miwae-digits -n 8 --out miwae-digits-reconstructions.png",
    ],
    "miwae-table": [
        IRIS_CSV,
        "head -3 iris.csv",
        "dgm train --dataset iris.csv --likelihood mixed --objective miwae --missing-rate 0.3 --latent-dim 2 "
        "--hidden 64 64 --epochs 100 --quiet --out runs/iris",
        "dgm impute runs/iris --k 1000 --baselines mean knn iterative --out iris-train-filled.csv",
        HOLES_CSV,
        "dgm impute runs/iris holes.csv --k 1000 --out filled.csv && cat filled.csv",
        "dgm sample runs/iris -n 5 --out synthetic.csv && cat synthetic.csv",
    ],
    "ood": [
        DIGITS_FLIPPED_NPY,
        "dgm ood runs/pixelcnn --in test --ood digits-flipped.npy --ood-split all --out ood.png",
    ],
    "resume": [
        f"{T} --hidden 32 --latent-dim 4 --epochs 12 --batch-size 8 --skip-grad-factor 1.5 --time-budget 0.3 --out runs/tb",
        f"{T} --hidden 32 --latent-dim 4 --epochs 12 --batch-size 8 --skip-grad-factor 1.5 --resume --out runs/tb",
    ],
    "train-for": [
        f"{T} --hidden 32 --latent-dim 4 --epochs 1000 --lr-schedule cosine --train-for 8 --quiet --out runs/tf",
    ],
    "ddp": [
        f"{T} --hidden 64 --latent-dim 4 --epochs 2 --nproc 2 --out runs/ddp",
        "dgm report runs/ddp runs/vae --out report.html --samples 16",
        f"{T} --hidden 64 --latent-dim 4 --epochs 2 --tensorboard --quiet --out runs/tensorboard",
        "ls runs/tensorboard",
    ],
    "safety": [
        "dgm sample runs/vae -n 4 --out s.png",
        "dgm sample runs/vae -n 4 --out s.png  # fails",
        f"{T} --epochs 1.5 --out runs/bad  # fails",
        f"{T} --model ppca --lr 0.01 --out runs/bad  # fails",
        f"{T} --epochs 1 --out runs/vae  # fails",
        "dgm eval runs/nothing-here  # fails",
        "dgm train --dataset no-such-file.npy --out runs/bad  # fails",
    ],
    "python-quickstart": ["python examples/quickstart.py"],
    "python-api": ["python examples/python_api.py"],
    "python-flows-arms": ["python examples/flows_and_arms.py"],
    "python-imputation": ["python examples/imputation.py"],
    "python-custom-parts": ["python examples/custom_parts.py"],
    "sprites": [
        "dgm train --dataset sprites --hidden 256 --latent-dim 6 --epochs 1 --batch-size 256 --out runs/sprites",
        "dgm disentangle runs/sprites",
        "dgm traverse runs/sprites --out traverse.png",
    ],
}

# transcript -> the transcripts whose runs or files it reads
NEEDS = {
    "readme-figures": ["demo"],
    "compress": ["arm"],
    "score": ["vae", "compress"],
    "ood": ["arm"],
    "ddp": ["vae"],
    "safety": ["vae"],
}

# `dgm train --model NAME --help`: the section of the family's own settings.
FAMILIES = [
    "vae", "hvae", "pixelvae", "dvae", "helmholtz", "ppca", "loglinear", "ae", "wae", "vqvae", "flow", "arm", "diffusion",
    "m2", "adgm", "hybrid",
]  # fmt: skip


def run(cmd: str, cwd: Path, env: dict) -> tuple[str, int]:
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    out = out.replace(str(cwd) + "/", "").replace(str(cwd), ".")  # the temporary folder's name
    return out, proc.returncode


def clean(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def family_flags(name: str, env: dict, cwd: Path) -> str:
    out, rc = run(f"dgm train --model {name} --help", cwd, env)
    if rc != 0:
        raise SystemExit(f"dgm train --model {name} --help failed:\n{out}")
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"model {name}:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("models ("))
    body = "\n".join(lines[start:end]).rstrip()
    return f"$ dgm train --model {name} --help   # the family's own settings; the shared ones are in --help\n{body}\n"


# the files a transcript writes where a later one writes its own of the same name (the README's
# figures of the demo's run, then the vae transcript's): removed once it is done
CLEARED = {"readme-figures": ("samples.png", "interpolations.png")}


def main(names: list[str]) -> None:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["COLUMNS"] = "120"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env.pop("DGMKIT_DATA", None)  # nothing here reads a data file from outside
    OUT.mkdir(exist_ok=True)
    wanted = names or [*TRANSCRIPTS, "flags"]
    unknown = set(wanted) - set(TRANSCRIPTS) - {"flags"}
    if unknown:
        raise SystemExit(f"no such transcript: {', '.join(sorted(unknown))}")
    needed = set(wanted)
    while True:  # the runs that the wanted transcripts read
        more = {d for n in needed for d in NEEDS.get(n, [])} - needed
        if not more:
            break
        needed |= more
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dgm-transcripts-") as tmp:
        cwd = Path(tmp)
        shutil.copytree(REPO / "examples", cwd / "examples")  # `python examples/NAME.py` as in a clone
        for name, commands in TRANSCRIPTS.items():
            if name not in needed:
                continue
            t0, text = time.time(), []
            for cmd in commands:
                fails = cmd.endswith("# fails")
                shown = cmd.removesuffix("# fails").rstrip()
                out, rc = run(shown, cwd, env)
                text.append(f"$ {shown}\n{clean(out)}")
                if rc != (1 if fails else 0):
                    failed.append(name)
                    print(f"{name}: `{shown}` exited with {rc}:\n{out}", file=sys.stderr, flush=True)
                    break
            for left in CLEARED.get(name, ()):  # (a figure a later transcript writes under the same name)
                (cwd / left).unlink(missing_ok=True)
            if name in wanted and name not in failed:
                (OUT / f"{name}.txt").write_text("".join(text))
                print(f"{name}: {len(commands)} commands, {time.time() - t0:.0f} s", flush=True)
        if "flags" in wanted:
            for fam in FAMILIES:
                (OUT / f"flags-{fam}.txt").write_text(family_flags(fam, env, cwd))
            print(f"flags: {len(FAMILIES)} families", flush=True)
    if failed:
        raise SystemExit(f"failed (their files not written): {', '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
