"""A tiny training run for the fault-injection suite, run as a subprocess so that it can be killed.

``python _child.py OUT [--resume] [--kill STEP:WHERE] [--hold SECONDS]`` trains :func:`phases` on :func:`images`
into ``OUT`` and writes ``OUT/final.npz`` (every leaf of the final parameters and method state) at the end.
``--kill STEP:WHERE`` makes the process SIGKILL itself while it writes checkpoint ``STEP``: ``before-save``
(the epoch's metrics row is written, the checkpoint is not), ``mid-save`` (from a timer while Orbax writes) or
``before-checksum`` (the Orbax save completed, its checksum is not yet written). ``--hold`` sleeps that long
after each checkpoint (to keep the run directory busy). A refused run exits 3 with the message on stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

import numpy as np

EPOCHS = (2, 2)  # plain VAE epochs, then MCMC (gradmala) epochs


def images(n=200, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((2, 8, 8, 1)) < 0.5
    labels = rng.integers(0, 2, n)
    flips = rng.random((n, 8, 8, 1)) < 0.05
    return (protos[labels] ^ flips).astype(np.float32)


def model():
    import mcmcvae as mv

    return mv.models.VAE((8, 8, 1), 2, hidden_sizes=(16,))


def phases():
    import mcmcvae as mv
    from mcmcvae.train import Phase

    return [Phase(mv.methods.build("vae", learning_rate=3e-3), EPOCHS[0]),
            Phase(mv.methods.build("gradmala", num_mcmc_steps=2), EPOCHS[1])]


def trainer(out=None):
    from mcmcvae.train import Trainer

    return Trainer(model(), phases(), batch_size=50, seed=7, out_dir=out, progress=False)


def leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill", default=None)
    parser.add_argument("--hold", type=float, default=0.0)
    args = parser.parse_args(argv)

    from mcmcvae import train as training

    save = training._Checkpoints.save
    kill_step, where = (int(args.kill.split(":")[0]), args.kill.split(":")[1]) if args.kill else (None, None)

    def patched_save(self, step, params, state, **meta):
        if step == kill_step and where == "before-save":
            _kill()
        if step == kill_step and where == "mid-save":
            threading.Timer(0.005, _kill).start()
        if step == kill_step and where == "before-checksum":
            training._write_atomic = lambda *a, **k: _kill()
        save(self, step, params, state, **meta)
        if step == kill_step and where == "mid-save":
            _kill()  # the save finished before the timer fired: still killed inside the write
        time.sleep(args.hold)

    training._Checkpoints.save = patched_save
    try:
        params, state = trainer(args.out).run(images(), resume=args.resume)
    except training.RunInUseError as error:
        print(error, file=sys.stderr)
        return 3
    np.savez(os.path.join(args.out, "final.npz"), *leaves((params, state)))
    print("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
