"""Wall time of the trust reward for a GRPO step's completions against a judge with 200 ms latency.

    python -m benchmarks.judge_reward_latency [--completions 32] [--latency 0.2] [--concurrency 32] [--repeats 5]

A scripted OpenAI-compatible judge server on 127.0.0.1 (:mod:`multimood.tiny.judge_server`) answers
every request after ``--latency`` seconds. Each completion's response is one sentence, so a
completion costs one judge call. We time ``TrustReward`` on one completion and on all of them
(fresh sentences each repeat, no cache), with ``OpenAIJudge(max_concurrency=--concurrency)``.
Target: all completions in at most 2x the time of one call (the calls overlap instead of queueing).
The openai client is imported and one warm-up call made before timing.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import spread, write_row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--completions", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per call, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="OpenAIJudge max_concurrency")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import openai  # noqa: F401 - import cost is paid once per process, not per step

    from multimood.data.prompt import OUTPUT_FIELDS
    from multimood.rewards.trust import OpenAIJudge, TrustReward
    from multimood.tiny.judge_server import JudgeServer

    def answer(response: str) -> str:
        labels = ("sadness", "neutral", "Open question", response)
        return "\n".join(f"{field}: {value}" for field, value in zip(OUTPUT_FIELDS, labels, strict=True))

    one_s, all_s = [], []
    with JudgeServer(latency_s=args.latency) as server:
        judge = OpenAIJudge(
            "bench-judge", base_url=server.base_url, api_key_env=None, max_concurrency=args.concurrency
        )
        reward = TrustReward(judge)
        reward([answer("Warm up call.")], ["r"])
        for repeat in range(args.repeats):
            start = time.perf_counter()
            single = reward([answer(f"Single call number {repeat}.")], ["r"])
            one_s.append(time.perf_counter() - start)
            batch = [answer(f"Completion {i} of repeat {repeat} is here.") for i in range(args.completions)]
            server.reset_counts()
            start = time.perf_counter()
            out = reward(batch, ["r"] * len(batch))
            all_s.append(time.perf_counter() - start)
            if not (bool(single.present.all()) and bool(out.present.all())):
                raise RuntimeError(f"judgements missing in the benchmark: {out.stats}")
            if server.requests != args.completions:
                raise RuntimeError(f"expected {args.completions} calls, the server saw {server.requests}")
        in_flight = server.max_in_flight
    ratio = [a / o for a, o in zip(all_s, one_s, strict=True)]
    row = {
        "completions": args.completions,
        "sentences_per_completion": 1,
        "server_latency_s": args.latency,
        "max_concurrency": args.concurrency,
        "server_max_in_flight": in_flight,
        "one_call_s": spread(one_s, 3),
        "all_completions_s": spread(all_s, 3),
        "ratio_all_to_one": spread(ratio, 2),
        "target_ratio": 2.0,
        "meets_target": sorted(ratio)[len(ratio) // 2] <= 2.0,
    }
    path = write_row("judge_reward_latency", row)
    print(
        f"one call {row['one_call_s']['median']:.3f} s, {args.completions} completions "
        f"{row['all_completions_s']['median']:.3f} s (median ratio {row['ratio_all_to_one']['median']:.2f}, "
        f"concurrency {args.concurrency}, at most {in_flight} in flight) -> {path}"
    )


if __name__ == "__main__":
    main()
