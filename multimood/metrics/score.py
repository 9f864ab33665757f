"""``multimood score PREDICTIONS.jsonl``: score a predictions file in the authors' format, no model needed.

One JSON object per line, ``{"label": <reference answer>, "predict": <generated answer>}`` (other
keys such as ``sample_id`` are allowed and ignored; blank lines are skipped). Prints the row of
paper table 4 (percentages) and writes the flat metrics of
:class:`~multimood.metrics.mesc.MESCMetrics` (fractions) as JSON with ``--out``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path

from multimood.data.answer import ParsedAnswer, parse_answer

LABEL_KEY = "label"
PREDICT_KEY = "predict"


class PredictionsFileError(ValueError):
    """A predictions file that cannot be scored; the message names the file and line."""


def read_predictions(path: str | Path) -> list[tuple[int, ParsedAnswer, ParsedAnswer]]:
    """``(line number, parsed prediction, parsed reference)`` for every non-blank line of ``path``.

    Raises :class:`PredictionsFileError` for a line that is not a JSON object, lacks ``label`` or
    ``predict``, holds a non-string there, or whose label does not parse, and for a file without
    any line.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsFileError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PredictionsFileError(
                    f"{where}: not valid JSON ({err.msg} at column {err.colno})"
                ) from None
            if not isinstance(record, dict):
                raise PredictionsFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
            for key in (LABEL_KEY, PREDICT_KEY):
                if key not in record:
                    raise PredictionsFileError(
                        f"{where}: missing key {key!r} (keys: {', '.join(sorted(record))})"
                    )
                if not isinstance(record[key], str):
                    raise PredictionsFileError(
                        f"{where}: {key!r} must be a string, got {type(record[key]).__name__}"
                    )
            reference = parse_answer(record[LABEL_KEY])
            if not reference.ok:
                raise PredictionsFileError(
                    f"{where}: the {LABEL_KEY!r} answer does not parse ({reference.reason})"
                )
            rows.append((number, parse_answer(record[PREDICT_KEY]), reference))
    if not rows:
        raise PredictionsFileError(f"{path}: no predictions (the file is empty)")
    return rows


def score_file(
    path: str | Path,
    bertscore_model: str | None = None,
    bertscore_layers: int | None = None,
    batch_size: int = 256,
) -> dict[str, float | int]:
    """The flat metrics of :class:`~multimood.metrics.mesc.MESCMetrics` for a predictions file (plain numbers)."""
    from multimood.metrics.mesc import MESCMetrics

    rows = read_predictions(path)
    metrics = MESCMetrics(bertscore_model=bertscore_model, bertscore_layers=bertscore_layers)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        metrics.update([p for _, p, _ in chunk], [r for _, _, r in chunk])
    result: dict[str, float | int] = {}
    for key, value in metrics.compute().items():
        result[key] = int(value) if key == "num_samples" else float(value)
    return result


def format_table(result: Mapping[str, float | int], name: str) -> str:
    """The row of paper table 4 for ``result``, in percent, with a two-line header as in the paper."""

    def pct(key: str) -> str:
        value = result.get(key)
        return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"

    columns = [
        ("Task 1", "Acc", "client_emotion/accuracy"),
        ("", "F1", "client_emotion/weighted_f1"),
        ("Task 2", "Acc", "therapist_emotion/accuracy"),
        ("", "F1", "therapist_emotion/weighted_f1"),
        ("Task 3", "Acc", "strategy/accuracy"),
        ("", "F1", "strategy/weighted_f1"),
        ("Task 4", "B2", "response/bleu2"),
        ("", "B2-authors", "response/bleu2_authors"),
        ("", "R-L", "response/rouge_l"),
        ("", "BScore", "response/bertscore_f1"),
    ]
    values = [pct(key) for _, _, key in columns]
    widths = [
        max(len(group), len(sub), len(value)) for (group, sub, _), value in zip(columns, values, strict=True)
    ]
    first = max(len("Model"), len(name))
    lines = [
        "  ".join(
            [" " * first, *(g.ljust(w) for (g, _, _), w in zip(columns, widths, strict=True))]
        ).rstrip(),
        "  ".join(
            ["Model".ljust(first), *(s.rjust(w) for (_, s, _), w in zip(columns, widths, strict=True))]
        ),
        "  ".join([name.ljust(first), *(v.rjust(w) for v, w in zip(values, widths, strict=True))]),
        "",
        f"samples: {result['num_samples']}; predictions with a field that did not parse: "
        f"{pct('parse_failure_rate')}% (counted wrong, not dropped)",
        "Task 1: client emotion, Task 2: therapist emotion, Task 3: strategy (accuracy, weighted F1); "
        "Task 4: B2 = corpus BLEU-2, B2-authors = mean sentence BLEU with weights (0.99, 0.01) "
        "as the authors' scorer, R-L = ROUGE-L F1, BScore = BERTScore F1",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score a predictions file, print the table, optionally write the JSON."""
    from multimood.cli import make_parser

    parser = make_parser(
        "score",
        "Score a predictions JSONL (one {'label': answer, 'predict': answer} per line): paper table 4 "
        "metrics, with unparsable predictions counted wrong.",
    )
    parser.add_argument("predictions", help="JSONL file of {'label': ..., 'predict': ...} lines")
    parser.add_argument(
        "--out", default=None, help="write the flat metrics (fractions in [0, 1]) to this JSON file"
    )
    parser.add_argument(
        "--bertscore-model",
        default=None,
        help="encoder for BERTScore F1: hub id, local folder or tiny:/packaged: name (the paper: "
        "roberta-large); without it BERTScore is left out",
    )
    parser.add_argument(
        "--bertscore-layers",
        type=int,
        default=None,
        help="hidden layer BERTScore compares (default: bert_score's tuned layer, 17 for roberta-large; "
        "required for a local folder)",
    )
    args = parser.parse_args(argv)
    try:
        result = score_file(args.predictions, args.bertscore_model, args.bertscore_layers)
    except (PredictionsFileError, ValueError) as err:  # bad file, or a BERTScore setting it names
        print(f"multimood score: error: {err}", file=sys.stderr)
        return 2
    print(format_table(result, Path(args.predictions).stem))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
