"""Continuous batching over one llama.cpp context: N slots (sequences), one decode per step for all of them.

Every step puts each generating sequence's next token and as much pending prompt as the batch has room for into one
`llama_decode`, then samples every sequence that produced logits. New requests take a free slot between steps;
requests beyond N wait in arrival order. A prompt longer than the batch is evaluated in chunks over several steps,
and while other sequences generate a step takes at most PROMPT_ROWS_WHILE_GENERATING prompt tokens, so the streams
already running keep flowing.

Prefix reuse: a new request starts from the longest token prefix it shares with any slot (its own, copied from
another slot's sequence, restored from the host cache of finished sequences, or from the disk cache of stored
conversations), and only the rest is evaluated. A request marked `persist` leaves its sequence in the disk cache.
Each slot has its own KV stream of the whole context, and requests are limited to that context when they start,
so no step can run out of KV room.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import llama_cpp

from lms.errors import LmsError
from runtimes.llama_cpp.disk_cache import DiskCache
from runtimes.llama_cpp.prefix_cache import HostCache, common_prefix

SAVE_AT_LEAST = 32  # a sequence that would lose fewer cached tokens than this is not worth a host-cache copy
# An idle scheduler that gets a request waits this long for others arriving with it (clients that fire several at
# once): they are admitted into one first step instead of queueing behind the first one's prompt.
ADMISSION_WINDOW_SECONDS = 0.004
# Prompt tokens a step takes while other sequences are generating: a whole batch of prompt (512 tokens, seconds on
# a small CPU) would stall every running stream for that long; smaller chunks keep them flowing, at a small cost
# in prompt speed. With nothing generating, a prompt takes the whole batch.
PROMPT_ROWS_WHILE_GENERATING = 128


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # tokens whose KV the sequence holds (when idle)
    job: Job | None = None
    used_at: float = 0.0

    def held(self) -> list[int]:
        return self.job.tokens[: self.job.evaluated] if self.job else self.tokens


class Job:
    """One generation in flight. The engine fills in how its tokens are turned into events (`on_token`)."""

    def __init__(self, tokens: list[int], limit: int, cancelled: Callable[[], bool], fail: Callable[[Exception], None],
                 on_token: Callable[[Job, int, int], bool], on_cancel: Callable[[Job], None], sampler,
                 prepare: Callable[[Job, int], None] | None = None, draft=None, draft_max: int = 0,
                 on_progress: Callable[[Job], None] | None = None, draft_min_probability: float = 0.0,
                 persist: bool = False):
        self.tokens = tokens
        self.limit = limit  # tokens it may still generate
        self.cancelled, self.fail, self.on_token, self.on_cancel = cancelled, fail, on_token, on_cancel
        self.sampler = sampler
        self.prepare = prepare  # evaluates media into the slot's sequence on admission (images)
        self.on_progress = on_progress  # told after each prompt chunk but the last
        self.draft, self.draft_max = draft, draft_max
        self.draft_min_probability = draft_min_probability  # the draft stops at a guess it is less sure of
        self.persist = persist  # a stored conversation: its sequence goes to the disk cache when it ends
        self.prompt_length = len(tokens)
        self.evaluated = 0
        self.cached = 0
        self.count = 0
        self.draft_stats = {"total": 0, "accepted": 0, "rejected": 0, "ignored": 0}
        self.admitted_at = 0.0

    def guess(self, logits, guesses: list[int]) -> int:
        """The draft's next guess, chosen as this job's own sampler would choose greedily."""
        return self.sampler.guess(logits, self.tokens[self.prompt_length:] + guesses)

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.evaluated


class Scheduler:
    def __init__(self, ctx, n_slots: int, n_batch: int, max_outputs: int, host_cache: HostCache, n_swa: int = 0,
                 disk_cache: DiskCache | None = None):
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_batch = n_batch
        self.prompt_rows_while_generating = PROMPT_ROWS_WHILE_GENERATING
        self.max_outputs = max_outputs  # logits rows per step (the context's output buffer)
        self.slots = [Slot(seq) for seq in range(n_slots)]
        self.host_cache = host_cache
        self.disk_cache = disk_cache
        self.sliding_window = n_swa > 0  # sliding-window caches forget old positions: only in-place reuse
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, n_slots)
        self.step_end: Callable[[], None] = lambda: None  # after every step, on this thread (events go out)
        self.thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self.thread.start()

    # --- from other threads -------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self.wake:
            self.waiting.append(job)
            self.wake.notify()

    # --- the scheduling thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.wake:
                idle = not any(s.job for s in self.slots)
                while not self.waiting and idle:
                    self.wake.wait()
                if idle:
                    self._gather(len(self.slots))
            try:
                self._admit()
                self._step()
            except Exception as exc:  # a broken step fails the requests in it, never the worker
                traceback.print_exc()
                for slot in self.slots:
                    if slot.job:
                        self._release(slot, error=exc)
            self.step_end()

    def _gather(self, room: int) -> None:
        """Called holding `wake`: wait out the admission window while fewer requests wait than slots are free."""
        deadline = time.perf_counter() + ADMISSION_WINDOW_SECONDS
        while len(self.waiting) < room and (left := deadline - time.perf_counter()) > 0:
            self.wake.wait(left)

    def _admit(self) -> None:
        with self.wake:
            for job in [j for j in self.waiting if j.cancelled()]:
                self.waiting.remove(job)
                job.on_cancel(job)
        while True:
            free = [s for s in self.slots if s.job is None]
            with self.wake:
                if not free or not self.waiting:
                    return
                job = self.waiting.popleft()
            running = [s.seq for s in self.slots if s.job]
            slot = max(free, key=lambda s: self._fitness(s, job, running))
            try:
                self._place(job, slot)
            except Exception as exc:  # e.g. an image that cannot be decoded: this request fails, alone
                slot.job = None
                self._clear(slot)
                job.fail(exc)

    @staticmethod
    def _fitness(slot: Slot, job: Job, running: Sequence[int] = ()) -> tuple[int, int, bool, float]:
        """Which free slot a job takes: the one sharing a useful prefix with it (more than a chat template's
        opening), else the one that keeps the running sequences (`running`: their ids) closest together, else an
        empty one, else the least recently used, so that caches live as long as they can. Closeness matters because
        a step attends over every KV stream from the lowest sequence in it to the highest: measured on the bundled
        model, sequences 0 and 3 take 19 ms a step, 0 and 1 (or 1 and 2) 15 ms."""
        shared = common_prefix(slot.tokens, job.tokens)
        useful = shared if shared >= max(SAVE_AT_LEAST, len(job.tokens) // 10) else 0
        seqs = [*running, slot.seq]
        spanned = max(seqs) - min(seqs) + 1
        return useful, -spanned, not slot.tokens, -slot.used_at

    def _place(self, job: Job, slot: Slot) -> None:
        """Seat a job in a slot, starting from the longest prefix any cache holds."""
        slot.job, job.admitted_at = job, time.perf_counter()
        if job.prepare is not None:  # media evaluated straight into the sequence: nothing to reuse
            self._clear(slot)
            job.prepare(job, slot.seq)
            job.prepare, job.prompt_length = None, len(job.tokens)
            self._truncate(slot, job, len(job.tokens) - 1)
            return
        want = len(job.tokens) - 1  # the last prompt token is always evaluated: its logits start the answer
        own = min(common_prefix(slot.tokens, job.tokens), want)
        donor, shared = None, own
        if not self.sliding_window:
            for other in self.slots:
                if other is not slot:
                    length = min(common_prefix(other.held(), job.tokens), want)
                    if length > shared:
                        donor, shared = other, length
        saved, stored = self.host_cache.best(job.tokens) if not self.sliding_window else (None, 0)
        stored = min(stored, want)
        on_disk, disk_length = self.disk_cache.best(job.tokens) if self.disk_cache and not self.sliding_window \
            else (None, 0)
        disk_length = min(disk_length, want)
        if donor is None and max(stored, disk_length) <= shared:
            self._truncate(slot, job, own)
            return
        self._keep_in_host_cache(slot, own)
        self._clear(slot)
        if disk_length > max(shared, stored):  # a stored conversation from before a restart or a reload
            restored = self.disk_cache.restore(on_disk, self.ctx, slot.seq)
            if restored is not None:
                self._truncate(slot, job, min(common_prefix(restored, job.tokens), want))
                return
            self._clear(slot)
            if donor is None and stored <= 0:
                return
        if donor is not None and shared >= stored:
            # sequences in separate KV streams can only be copied whole; the tail is trimmed after
            llama_cpp.llama_memory_seq_cp(self.memory, donor.seq, slot.seq, -1, -1)
            self._truncate(slot, job, shared)
            return
        restored = self.host_cache.restore(saved, self.ctx, slot.seq)
        if restored is None:
            self._clear(slot)
            return
        self._truncate(slot, job, min(common_prefix(restored, job.tokens), want))

    def _truncate(self, slot: Slot, job: Job, keep: int) -> None:
        """Keep the first `keep` positions of the slot's sequence for the job; evaluate the rest."""
        if keep <= 0 or not llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, keep, -1):
            self._clear(slot)
            keep = 0
        elif self.sliding_window and llama_cpp.llama_memory_seq_pos_min(self.memory, slot.seq) > 0:
            self._clear(slot)  # the window no longer covers what the next token must attend to
            keep = 0
        job.evaluated = job.cached = keep

    def _keep_in_host_cache(self, slot: Slot, kept: int) -> None:
        if len(slot.tokens) - kept >= SAVE_AT_LEAST and not self.sliding_window:
            self.host_cache.save(self.ctx, slot.seq, slot.tokens)

    def _clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        slot.tokens = []

    def _release(self, slot: Slot, error: Exception | None = None) -> None:
        job, slot.job = slot.job, None
        slot.used_at = time.perf_counter()
        if error is not None or job is None:
            self._clear(slot)
            if job is not None:
                job.fail(error)
            return
        slot.tokens = job.tokens[: job.evaluated]
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, job.evaluated, -1)  # rejected draft positions
        if job.persist and self.disk_cache is not None and not self.sliding_window:  # a window forgets the start
            self.disk_cache.save(self.ctx, slot.seq, slot.tokens)

    def _step(self) -> None:
        running = [s for s in self.slots if s.job]
        for slot in running:
            if slot.job.cancelled():
                job = slot.job
                self._release(slot)
                job.on_cancel(job)
        running = sorted((s for s in self.slots if s.job), key=lambda s: s.job.admitted_at)
        if not running:
            return
        # (slot, first batch row, rows, draft tokens, whether its logits come back) of every sequence in this step
        plan: list[tuple[Slot, int, int, list[int], bool]] = []
        batch, budget = self.batch, self.n_batch
        rows = 0
        outputs = self.max_outputs - sum(1 for s in running if s.job.pending >= 1)  # one row each, drafts aside
        # Generating sequences first, one token each (plus a draft), in sequence-id order: llama.cpp runs a batch of
        # out-of-order sequences more slowly (measured, 4 streams: 24 ms a step in order, 31 ms out of order).
        for slot in sorted(running, key=lambda s: s.seq):
            job = slot.job
            if job.pending != 1:
                continue
            room = min(job.draft_max, job.limit - job.count - 1, budget - rows - 1, outputs)
            drafts = job.draft.propose(slot.seq, job.tokens, room, job.guess,
                                           job.draft_min_probability) if job.draft and room > 0 else []
            outputs -= len(drafts)
            tokens = [job.tokens[-1], *drafts]
            self._fill(rows, tokens, job.evaluated, slot.seq, logits=True)
            plan.append((slot, rows, len(tokens), drafts, True))
            rows += len(tokens)
        if rows:  # streams are generating: prompts get a small share of the step (see PROMPT_ROWS_WHILE_GENERATING)
            budget = min(budget, rows + self.prompt_rows_while_generating)
        for slot in running:  # then prompts, oldest first, in chunks of what is left
            job = slot.job
            if job.pending <= 1 or rows >= budget:
                continue
            take = min(job.pending, budget - rows)
            start = job.evaluated
            self._fill(rows, job.tokens[start: start + take], start, slot.seq, logits=False)
            last = start + take == len(job.tokens)
            if last:
                batch.logits[rows + take - 1] = True
            plan.append((slot, rows, take, [], last))
            rows += take
        batch.n_tokens = rows
        result = llama_cpp.llama_decode(self.ctx, batch)
        if result != 0:  # the step's requests fail (see _run); the worker stays up
            raise LmsError.internal(f"llama.cpp decode failed (error {result})", code="decode_failed")
        for slot, row, count, drafts, sampled in plan:
            job = slot.job
            if not sampled:  # a prompt chunk that is not the last one
                job.evaluated += count
                if job.on_progress is not None:
                    job.on_progress(job)
                continue
            try:
                if drafts:
                    accepted = job.draft_stats["accepted"]
                    self._verify(slot, job, row, drafts)
                    job.draft.judge(slot.seq, len(drafts), job.draft_stats["accepted"] - accepted)
                else:
                    job.evaluated += count
                    self._sample(slot, job, row + count - 1)
            except Exception as exc:
                traceback.print_exc()
                self._release(slot, error=exc)

    def _sample(self, slot: Slot, job: Job, row: int) -> bool:
        """The job's next token from output row `row`; False (and the slot released) when the job ended."""
        token = job.sampler.sample(self.ctx, row)
        job.count += 1
        if not job.on_token(job, token, row):
            self._release(slot)
            return False
        job.tokens.append(token)
        return True

    def _verify(self, slot: Slot, job: Job, row: int, drafts: list[int]) -> None:
        """Rows row..row+len(drafts) hold the target's view after the last token and after each draft token: take
        the target's own choice at each and go on while it agrees with the draft. Sampling is the target's, so
        the text is what the target alone would write."""
        base = job.evaluated  # position of the last token, evaluated in this step's first row
        stats = job.draft_stats
        stats["total"] += len(drafts)
        for index in range(len(drafts) + 1):
            job.evaluated = base + 1 + index  # the rows up to this one hold valid positions
            if not self._sample(slot, job, row + index):
                stats["ignored"] += len(drafts) - index
                return
            if index == len(drafts):
                break
            if job.tokens[-1] != drafts[index]:
                stats["rejected"] += 1
                stats["ignored"] += len(drafts) - index - 1
                break
            stats["accepted"] += 1
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, job.evaluated, -1)

    def _fill(self, start: int, tokens: list[int], position: int, seq: int, logits: bool) -> None:
        batch = self.batch
        for offset, token in enumerate(tokens):
            row = start + offset
            batch.token[row] = token
            batch.pos[row] = position + offset
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = seq
            batch.logits[row] = logits
