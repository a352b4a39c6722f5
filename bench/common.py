"""Helpers shared by the bench scripts: the test model, deterministic texts, timing statistics."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUBJECTS = """the user, my manager, the build server, our team, the customer, the new intern, the
database, the API gateway, Alice, Bob, the release script, the cat, my sister, the landlord, the
doctor, the CI pipeline, the mobile app, the backup job, the compiler, the weekly meeting""".split(",")
VERBS = """prefers, forgot, fixed, broke, asked about, recommended, scheduled, cancelled, deployed,
reviewed, complained about, wants to learn, measured, renamed, moved, postponed, documented,
rewrote, paid for, booked""".split(",")
OBJECTS = """dark mode in the editor, the quarterly report, a flight to Lisbon, the flaky login test,
the Postgres migration, vegetarian recipes, the dentist appointment, a new laptop, the memory
leak in the parser, Python type hints, the garden irrigation, the invoice from March, the SSH
keys, the hiking trip, the pricing page, a Rust rewrite, the kubernetes cluster, birthday
presents, the onboarding guide, the noisy neighbour, jazz concerts, the vector index, tax
forms, the coffee machine, the GPU drivers""".split(",")
TAILS = """, because it was late again, before Friday, after the outage last night, and it took
three hours, but nobody noticed, so we should check it next week, according to the logs, while
travelling, for the second time this month, without telling anyone, as discussed on Monday, and
it finally works, which surprised everyone, during the holidays, , , """.split(",")
WORDS = """alpha budget cache deploy editor feature garden holiday invoice journal kernel latency
meeting network offline python query release schema ticket upgrade vector warning yaml zone
coffee doctor flight guitar hiking kitchen laptop mortgage novel piano recipe soccer travel
weather birthday concert dentist insurance library museum painting rent salary taxes train
error timeout memory index cluster backup restore migrate token secret password login logout
report review sprint roadmap pricing customer support refund shipping warehouse""".split()


def model_path() -> Path:
    """The shared test model: $MAGRAY_TEST_MODEL, else ../shared/models next to the repo."""
    env = os.environ.get("MAGRAY_TEST_MODEL")
    path = Path(env) if env else ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"
    if not path.is_file():
        raise SystemExit(f"model not found at {path}: set MAGRAY_TEST_MODEL to a GGUF file")
    return path


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` distinct, varied English sentences, the same for the same seed."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = (f"{rng.choice(SUBJECTS).strip().capitalize()} {rng.choice(VERBS).strip()} "
                f"{rng.choice(OBJECTS).strip()}{rng.choice(TAILS).rstrip()}")
        if rng.random() < 0.3:
            text += " " + " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))
        text += "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def mixed_vectors(base, n: int, seed: int = 1, noise: float = 0.02):
    """`n` unit vectors shaped like real embeddings without embedding `n` texts: each is a real
    embedding plus a smaller share of another one plus a little Gaussian noise, so that the
    set keeps the anisotropy and the neighbourhoods of the model's space (recall means something)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(base), n)
    b = rng.integers(0, len(base), n)
    w = rng.uniform(0, 0.7, (n, 1)).astype(np.float32)
    x = base[a] + w * base[b] + rng.normal(0, noise, (n, base.shape[1])).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


LAYER_CYCLE = ("interact", "insights", "assets")


def build_store(path: Path, vectors, contents: list[str], *, projects: int = 100,
                now: float = 1_750_000_000.0, batch: int = 2000):
    """A memory file bound to the test model, holding one memory per row of `vectors` with the
    given contents, inserted in bulk (records.insert + vectors.insert_chunks, one write
    transaction per `batch`) instead of embedding every text. Memory i is in project
    f"p{i % projects}", layer LAYER_CYCLE[i % 3], and never expires. Returns the open Memory."""
    from magray import records, vectors as vec_mod
    from magray.db import write_transaction
    from magray.embed.cache import text_hash
    from magray.memory import Memory

    mem = Memory.open(path, profile="fast", model=str(model_path()), clock=lambda: now)
    bound = mem.load_model()
    conn = mem.connection
    for start in range(0, len(contents), batch):
        with write_transaction(conn):
            for i in range(start, min(len(contents), start + batch)):
                layer, project = LAYER_CYCLE[i % 3], f"p{i % projects}"
                created = now - (i * 7919 % 2_592_000)  # spread over 30 days
                memory_id = records.insert(conn, {
                    "layer": layer, "content": contents[i], "content_hash": records.content_hash(contents[i]),
                    "title": None, "kind": None, "source": None, "project": project, "session": "",
                    "metadata": "{}", "created_at": created, "importance": 0.5, "expires_at": None}, [])
                vec_mod.insert_chunks(conn, bound.generation, memory_id, layer, project, "", created,
                                      [text_hash(contents[i])], vectors[i:i + 1])
    return mem


def load_note(after: bool = False) -> str:
    """The 1-minute load average, since other processes on a 2-core machine skew every timing."""
    cores = os.cpu_count() or 1
    return (f"load average {'after' if after else 'before'}: {os.getloadavg()[0]:.2f} on {cores} cores"
            + ("" if after else " (above ~0.5 per core, other work is running and timings suffer)"))
