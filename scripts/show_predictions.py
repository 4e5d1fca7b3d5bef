"""Show what a uni and a bi checkpoint predict, side by side (the end of `make demo`).

python scripts/show_predictions.py checkpoints/demo-uni checkpoints/demo-bi [-k 5]
"""

import click

from bilm.predict import Predictor

NEXT_WORD = [
    "the boys went to the",
    "The game was released in",
    "He was born in the city of",
]
BLANKS = [
    "the boys went to the ___ and then got out of the pool .",
    "The ___ of the United States is elected every four years .",
    "He was born in ___ , England , in 1950 .",
    "The film was released in ___ 2010 .",
    "She played the ___ in the orchestra .",
    "she opened the ___ and walked in .",
]


def _row(prediction, k: int) -> str:
    return "  ".join(f"{c.word} {c.prob:.2f}" for c in prediction.candidates[:k])


@click.command()
@click.argument("uni")
@click.argument("bi")
@click.option("-k", default=5, show_default=True)
def main(uni, bi, k):
    uni, bi = Predictor.load(uni), Predictor.load(bi)
    bi.join(uni.ckpt)  # a third bi row, uni+bi: both models together
    click.echo("== next word (uni) ==")
    for text in NEXT_WORD:
        click.echo(f"{text} ...\n  uni   {_row(uni.predict(text, k), k)}")
    click.echo("\n== fill in the blank ==")
    for text in BLANKS:
        left, rescored = uni.fill(text, k)
        plain, voted, both = bi.fill(text, k)
        click.echo(text)
        rows = [
            ("bi", plain, ""),
            ("bi+", voted, "the other words voting too"),
            ("uni+bi", both, "bi+ scored by the uni model too"),
            ("uni", left, "left context only"),
            ("uni+", rescored, "rescored with the right context"),
        ]
        for label, prediction, note in rows:
            click.echo(f"  {label:<7} {_row(prediction, k)}" + (f"   ({note})" if note else ""))


if __name__ == "__main__":
    main()
