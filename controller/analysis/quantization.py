"""What an accuracy-keeping conversion found out (issue 18), in one line, for the CLI's tables and the dashboard.

``details`` is a stored variant's ``VariantRow.details``: ``qat`` (the fine-tune's epochs and history),
``accuracy_control`` (NNCF's reverted layers and the accuracy it kept), ``mixed`` (the layers kept in float and
the fidelity reached), ``integer_check`` / ``ir_check`` (what a QAT variant is made of), ``note``.
"""

from __future__ import annotations


def details_summary(details: dict | None) -> str:
    """One line on what an accuracy-keeping conversion found out (issue 18), or ""."""
    if not details:
        return ""
    parts = []
    if "qat" in details:
        q = details["qat"]
        last = q["history"][-1] if q.get("history") else {}
        parts.append(f"QAT: {q['epochs']} epoch(s) on {q['n_train']:,} samples in {q['fine_tune_s']:.1f} s"
                     + (f", training accuracy {last['accuracy']:.3f}" if last.get("accuracy") is not None else ""))  # fmt: skip
    if "accuracy_control" in details:
        a = details["accuracy_control"]
        on = a.get("tuned_on", "validation split")
        parts.append(f"{len(a['float_layers'])} of {a['layers']} layers kept in float; top-1 {a['accuracy']:.2%} against "
                     f"fp32 {a['fp32_accuracy']:.2%} on the {on} it was tuned on (max drop {a['max_drop'] * 100:g} pt)"
                     + ("; its validation accuracy is not held out" if on == "validation split" else ""))  # fmt: skip
    if "mixed" in details:
        m = details["mixed"]
        parts.append(f"{len(m['float_layers'])} of {m['layers']} layers kept in float: {m['snr_db']:.1f} dB on the "
                     f"calibration split (all int8 {m['int8_snr_db']:.1f} dB, target {m['fidelity_target_db']:g})")  # fmt: skip
    check = details.get("integer_check")
    if check and not check["float_tensor_count"]:
        parts.append(f"all {check['tensors']} tensors integer")
    if "ir_check" in details:
        parts.append(f"{details['ir_check']['int8_weights']} int8 weight tensor(s)")
    if "note" in details:
        parts.append(details["note"])
    return "; ".join(parts)
