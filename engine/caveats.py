"""What a reader must know before trusting a result: out-of-distribution tissue, an assumed µm/px,
a triage policy not calibrated for the model.

Every front end (verdict panel, report, folder triage, overlay caption) words a result's caveats
from here, so none of them can show a score without them.
"""

from __future__ import annotations

from engine.ood import describe as describe_ood
from engine.summary import SlideSummary


def mpp_assumed(summary: SlideSummary) -> bool:
    """Whether the µm/px used was not the one the slide file records (given or defaulted)."""
    origin = summary.slide.get("mpp_origin")
    return origin is not None and origin != "file"


def mpp_caveat(summary: SlideSummary) -> str:
    """One line on an assumed µm/px, or "" when the file's own was used."""
    if not mpp_assumed(summary):
        return ""
    slide = summary.slide
    used = slide.get("mpp_used")
    file_mpp = slide.get("file_mpp")
    value = "?" if used is None else f"{float(used):g}"
    if file_mpp is not None:
        return (
            f"µm/px {value} was given instead of the file's {float(file_mpp):g}: "
            "the score depends on it; check it."
        )
    how = "a folder default" if slide.get("mpp_origin") == "default" else "given by hand"
    return (
        f"µm/px {value} is ASSUMED ({how}); the slide does not record it. "
        "The score depends on it: a wrong µm/px gives a wrong score."
    )


def out_of_distribution(summary: SlideSummary) -> bool:
    return bool(summary.out_of_distribution)


def policy_uncalibrated(summary: SlideSummary) -> bool:
    """Whether the model carried the default triage policy, not one calibrated for it."""
    return not summary.thresholds.policy().calibrated


def policy_caveat(summary: SlideSummary) -> str:
    """One line on an uncalibrated triage policy, or "" when the model's own was used."""
    if not policy_uncalibrated(summary):
        return ""
    return (
        f"Model {summary.model.version} carries the default slide thresholds, not ones calibrated "
        "for it: the category is only a rough guide; order slides by score."
    )


def caveats(summary: SlideSummary) -> list[str]:
    """Every caveat of a result, most serious first; empty when there is none."""
    out = []
    if out_of_distribution(summary):
        out.append(describe_ood(summary.ood or {"reasons": []}))
    out.extend(line for line in (mpp_caveat(summary), policy_caveat(summary)) if line)
    return out


def flags(summary: SlideSummary) -> list[str]:
    """A few capitalised words per caveat, for table cells and captions."""
    out = []
    if out_of_distribution(summary):
        out.append("OUT OF DISTRIBUTION")
    if mpp_assumed(summary):
        used = summary.mpp_used
        out.append(f"µm/px ASSUMED ({used:g})" if used is not None else "µm/px ASSUMED")
    if policy_uncalibrated(summary):
        out.append("THRESHOLDS NOT CALIBRATED")
    return out


def short_flags(summary: SlideSummary) -> str:
    """A table cell's caveats: "OUT OF DISTRIBUTION; µm/px ASSUMED (0.25)", or ""."""
    return "; ".join(flags(summary))


def caption(summary: SlideSummary) -> str:
    """The overlay's one-line caption: score, category, model and every caveat."""
    score = "n/a" if summary.score is None else f"{summary.score:.3f}"
    return " · ".join([f"score {score}", summary.category, f"model {summary.model.version}", *flags(summary)])
