"""What a training run leaves for people: its figures and report.html, one self-contained page showing them.

`write_run_report` draws the seven figures of a `fastcnn train` run with `fastcnn.viz` and writes the page;
`render_report` / `write_report` turn numbers and PNG files into that page and know nothing of models, and
`write_text_atomically` is the temporary-file-then-rename write the CLI uses for every text file.

The page needs nothing but itself: the styles are inline, there is no script and no CDN, and every figure is
embedded as a `data:image/png;base64,...` URI holding exactly the bytes of the PNG saved next to it, so the page
still shows everything when it is moved, mailed or opened offline.

Example:
    >>> write_report("runs/mnist-1", title="fastcnn: mnist", settings={"filters": 32},
    ...              results={"test accuracy": "98.33%"}, per_class=[("0", 980, 975)],
    ...              figures=[ReportFigure("filters.png", "Filters", "The 32 learned 3x3 kernels.")])
    'runs/mnist-1/report.html'
"""
from __future__ import annotations

import base64
import dataclasses
import html
import os
import time
from pathlib import Path

from ._atomic import write_text

__all__ = ["ReportFigure", "render_report", "write_report", "write_run_report", "write_text_atomically"]

REPORT_FILE = "report.html"


@dataclasses.dataclass(frozen=True)
class ReportFigure:
    """One PNG of the run folder as the page shows it.

    Attributes:
        file: the PNG's file name inside the run folder, e.g. "filters.png".
        title: the section heading.
        caption: one or two sentences saying what to look for.
    """

    file: str
    title: str
    caption: str


def write_text_atomically(path, text: str) -> str:
    """Write `text` (UTF-8) to `path` atomically (see fastcnn._atomic); returns the path."""
    return write_text(path, text)


_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 0;
       background: #f5f6f8; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #d8dce3; padding-bottom: 4px; }
.sub { color: #5b6475; margin: 0 0 16px; }
.note { background: #fff4d6; border: 1px solid #e8c766; padding: 8px 12px; border-radius: 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #d8dce3; border-radius: 8px; padding: 10px 16px; min-width: 130px; }
.card .value { font-size: 24px; font-weight: 600; }
.card .label { color: #5b6475; font-size: 13px; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d8dce3; }
th, td { padding: 4px 12px; border-bottom: 1px solid #eceef2; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #e3e8f1; width: 160px; height: 10px; border-radius: 5px; overflow: hidden; }
.bar span { display: block; height: 100%; background: #3f6fd8; }
.columns { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
figure { margin: 0; background: #fff; border: 1px solid #d8dce3; border-radius: 8px; padding: 12px;
         display: inline-block; max-width: 100%; box-sizing: border-box; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #5b6475; margin-top: 6px; max-width: 70ch; }
code { background: #eceef2; padding: 1px 4px; border-radius: 3px; }
"""


def _escape(value) -> str:
    return html.escape(str(value), quote=True)


def _png_data_uri(path: str) -> str:
    with open(path, "rb") as file:
        return "data:image/png;base64," + base64.b64encode(file.read()).decode("ascii")


def _anchor(file: str) -> str:
    return "fig-" + "".join(c if c.isalnum() else "-" for c in os.path.splitext(file)[0])


def _per_class_table(per_class) -> str:
    rows = []
    for name, images, correct in per_class:
        share = correct / images if images else 0.0
        accuracy = f"{share:.2%}" if images else "n/a"
        rows.append(f"<tr><td>{_escape(name)}</td><td class=num>{images}</td><td class=num>{correct}</td>"
                    f"<td class=num>{accuracy}</td><td><div class=bar><span style=\"width:{100 * share:.1f}%\">"
                    f"</span></div></td></tr>")
    return ("<table id=per-class><thead><tr><th>class</th><th class=num>test images</th><th class=num>correct</th>"
            "<th class=num>accuracy</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _key_value_table(values: dict, table_id: str) -> str:
    rows = "".join(f"<tr><th>{_escape(k)}</th><td>{_escape(v)}</td></tr>" for k, v in values.items())
    return f"<table id={table_id}><tbody>{rows}</tbody></table>"


def render_report(directory, *, title: str, subtitle: str = "", settings: dict, results: dict, per_class,
                  figures, notes=()) -> str:
    """The report page as an HTML string.

    Args:
        directory: the run folder holding the figures' PNG files, which are read and embedded.
        title: the page's heading and <title>.
        subtitle: one line under the heading (the run folder, the date). Default: "".
        settings: hyper-parameters and other settings, name -> value, shown as a table in this order.
        results: headline numbers, label -> formatted value ("test accuracy" -> "98.33%"), shown as cards.
        per_class: (class name, test images, correctly classified) for every class, in class order.
        figures: `ReportFigure`s in the order shown; a figure whose file is missing is listed as not drawn.
        notes: lines shown in a highlighted box at the top (an interrupted run says so there). Default: none.
    """
    directory = os.fspath(directory)
    parts = [
        "<!DOCTYPE html>",
        "<html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content=\"width=device-width, initial-scale=1\">",
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body><main>",
        f"<h1>{_escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p class=sub>{_escape(subtitle)}</p>")
    for note in notes:
        parts.append(f"<p class=note>{_escape(note)}</p>")
    cards = "".join(f"<div class=card><div class=value>{_escape(v)}</div><div class=label>{_escape(k)}</div></div>"
                    for k, v in results.items())
    parts.append(f"<h2>Results</h2><div class=cards id=results>{cards}</div>")
    parts.append("<div class=columns>")
    parts.append(f"<section><h2>Per-class accuracy</h2>{_per_class_table(per_class)}</section>")
    parts.append(f"<section><h2>Settings</h2>{_key_value_table(settings, 'settings')}</section>")
    parts.append("</div>")
    for figure in figures:
        path = os.path.join(directory, figure.file)
        parts.append(f"<section id={_anchor(figure.file)}><h2>{_escape(figure.title)}</h2>")
        if os.path.isfile(path):
            parts.append(f"<figure><img src=\"{_png_data_uri(path)}\" alt=\"{_escape(figure.title)}\" "
                         f"data-file=\"{_escape(figure.file)}\"><figcaption>{_escape(figure.caption)} "
                         f"(Saved as <code>{_escape(figure.file)}</code>.)</figcaption></figure>")
        else:
            parts.append(f"<p class=sub>Not drawn: {_escape(figure.caption)}</p>")
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_report(directory, **content) -> str:
    """Render the page (`render_report`'s keyword arguments) and write it as `<directory>/report.html`, atomically.
    Returns the path written."""
    return write_text_atomically(os.path.join(os.fspath(directory), REPORT_FILE), render_report(directory, **content))


def write_run_report(folder, model, history, x_test, y_test, names, scores, per_class, settings: dict, dataset: str,
                     train_images: int, train_seconds: float) -> str:
    """Draw a training run's seven figures into `folder` and write report.html showing them; returns its path.

    Args:
        folder: the run folder (a pathlib.Path).
        model: the trained tutorial CNN; history: fit's History (curves.png is skipped when it holds no epoch).
        x_test, y_test: the test images and labels; names: the class names.
        scores: evaluate's {"loss", "accuracy"}; per_class: (name, test images, correct) per class.
        settings: the hyper-parameters and the other training settings, shown in this order.
        dataset, train_images, train_seconds: what was trained on, and for how long.
    """
    from . import __version__, get_num_threads, viz

    folder = Path(folder)
    image = x_test[0]
    sample = f"the first {dataset} test image (a {names[int(y_test[0])]})"
    viz.plot_filters(model, path=folder / "filters.png")
    viz.plot_feature_maps(model, image, path=folder / "feature_maps.png")
    viz.plot_pooled_maps(model, image, path=folder / "pooled_maps.png")
    if history.epoch:
        viz.plot_history(history, path=folder / "curves.png")
    else:
        (folder / "curves.png").unlink(missing_ok=True)  # --out reused: an older run's curves would mislead
    viz.plot_confusion_matrix(model, x_test, y_test, names, path=folder / "confusion_matrix.png")
    viz.plot_saliency(model, image, class_names=names, path=folder / "saliency.png")
    viz.plot_predictions(model, x_test, y_test, names, count=16, path=folder / "predictions.png")

    figures = [
        ReportFigure("curves.png", "Training curves",
                     "Loss, accuracy and learning rate per epoch, as running means over each epoch's batches."
                     if history.epoch else "training stopped before the first epoch ended, so there is no curve."),
        ReportFigure("filters.png", "Filters", f"The {settings['filters']} learned {settings['filter_size']}x"
                     f"{settings['filter_size']} kernels of the first convolution (white: positive weights, black: "
                     "negative)."),
        ReportFigure("feature_maps.png", "Feature maps", f"The first convolution's output for {sample}: where each "
                     "filter responds."),
        ReportFigure("pooled_maps.png", "Pooled maps", f"Feature maps of {sample} before and after the first "
                     f"{settings['pool_size']}x{settings['pool_size']} max pooling"
                     + (" (a pool size of 1 leaves them unchanged)." if settings["pool_size"] == 1 else ".")),
        ReportFigure("confusion_matrix.png", "Confusion matrix", "Rows: the true class; columns: the predicted one. "
                     "Off-diagonal cells are the mistakes."),
        ReportFigure("saliency.png", "Saliency", f"How much each pixel of {sample} moves the predicted class's "
                     "score: the gradient's magnitude."),
        ReportFigure("predictions.png", "Predictions", "The first 16 test images with the predicted and true class; "
                     "mistakes are framed in red."),
    ]
    shown = {"dataset": dataset, "training images": train_images,
             **{k.replace("_", " "): ("yes" if v else "no") if isinstance(v, bool) else v for k, v in settings.items()},
             "threads": get_num_threads(), "fastcnn": __version__}
    notes = []
    if history.interrupted:
        notes.append(f"Training was interrupted (Ctrl-C) after {len(history.epoch)} of {settings['epochs']} "
                     "epochs; the model and these results are from that point.")
    correct = sum(c for _, _, c in per_class)
    return write_report(folder, title=f"fastcnn: the tutorial CNN on {dataset}",
                        subtitle=f"{folder} - {time.strftime('%Y-%m-%d %H:%M')}", settings=shown,
                        results={"test accuracy": f"{scores['accuracy']:.2%}", "test loss": f"{scores['loss']:.4f}",
                                 "correct": f"{correct} of {len(y_test)}", "epochs": f"{len(history.epoch)}",
                                 "training time": f"{train_seconds:.1f} s"},
                        per_class=per_class, figures=figures, notes=notes)
