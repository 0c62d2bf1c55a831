"""kill -9 a real process mid-ingest, repeatedly: the vault shows old or new, never torn."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sdl_core.vault import VaultStore

BATCH = 400
REPLACE_SIZE = 300
ROUNDS = 10

# The writer appends batches of new contacts (each batch tagged) and, every third batch,
# replaces the whole "interactions" dataset with a new generation. After each commit it
# prints what it committed, so the parent knows a lower bound.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from sdl_core.vault import VaultStore

    BATCH, REPLACE_SIZE = int(sys.argv[3]), int(sys.argv[4])

    async def main():
        vault = VaultStore.open(sys.argv[1], key_file=sys.argv[2])
        batch = await vault.count("contacts") // BATCH
        print("ready", flush=True)
        while True:
            records = [{"name": f"n{batch}-{i}", "email": f"c{batch}-{i}@example.com",
                        "org": "Org", "role": "Role", "batch": batch} for i in range(BATCH)]
            count = await vault.upsert("contacts", records)
            if batch % 3 == 0:
                await vault.replace("interactions", [
                    {"email": f"i{i}@example.com", "strength": 0.5, "generation": batch}
                    for i in range(REPLACE_SIZE)])
            print(f"committed {count}", flush=True)
            batch += 1

    asyncio.run(main())
    """
)


def _check(db: Path, key: Path, committed: int) -> int:
    async def inspect() -> int:
        vault = VaultStore.open(db, key_file=key)
        try:
            count = await vault.count("contacts")
            records = [r async for r in vault.iterate("contacts")]
            interactions = [r async for r in vault.iterate("interactions")]
        finally:
            await vault.close()
        assert len(records) == count, "count disagrees with the records"
        assert count % BATCH == 0, f"torn batch: {count} contacts"
        assert committed <= count <= committed + BATCH, (committed, count)
        for position, record in enumerate(records):
            batch, index = divmod(position, BATCH)
            assert record["batch"] == batch and record["email"] == f"c{batch}-{index}@example.com"
        generations = {r["generation"] for r in interactions}
        assert len(interactions) in (0, REPLACE_SIZE), f"torn replace: {len(interactions)}"
        assert len(generations) <= 1, f"mixed replace generations {generations}"
        return count

    return asyncio.run(inspect())


def test_kill_9_mid_ingest_leaves_old_or_new_state(tmp_path: Path) -> None:
    db, key = tmp_path / "data" / "vault.db", tmp_path / "keys" / "vault.key"
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    committed = 0
    deadline = time.monotonic() + 90
    for round_no in range(ROUNDS):
        assert time.monotonic() < deadline, "crash test exceeded its time budget"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(key), str(BATCH), str(REPLACE_SIZE)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        ready = proc.stdout.readline().strip()
        assert ready == "ready", f"writer failed to start: {ready!r} {proc.stderr.read()}"
        time.sleep(rng.uniform(0.02, 0.35))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        lines = [line for line in out.splitlines() if line.startswith("committed ")]
        if lines:
            committed = int(lines[-1].split()[1])
        count = _check(db, key, committed)
        committed = count
        print(f"seed={seed} round={round_no} contacts={count}")
    assert committed > 0, f"the writer never committed (seed {seed})"
