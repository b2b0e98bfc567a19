"""Fidelity: how closely a variant's outputs follow the fp32 reference, every output tensor.

Numpy only; the agent computes it on the device, tests call it on tables of
cases. For each output (matched to the reference by name, else by order):

- ``cosine``: the mean over samples of the cosine similarity of output and reference;
- ``snr_db``: 10·log10(Σref² / Σ(out-ref)²) over all samples, capped at :data:`SNR_CAP_DB`
  (identical outputs read the cap, since JSON has no infinity);
- ``max_abs_error``, ``mean_abs_error``;
- ``rel_l2``: ‖out-ref‖ / ‖ref‖ over all samples (None where the reference is all zeros);
- ``top1_agreement``: only for an output that holds class scores (:func:`is_class_scores`).

The summary is the worst output: lowest cosine and SNR, highest errors. A
reference that is (near-)constant across samples proves nothing, and says so
in ``warnings``.
"""

from __future__ import annotations

import numpy as np

from protocol.records import Fidelity, OutputFidelity

#: SNR of identical outputs (no error at all): far above any real float32 difference (~140 dB).
SNR_CAP_DB = 300.0
#: A reference whose spread across samples is below this share of its RMS is "near-constant".
CONSTANT_SPREAD = 1e-4


def is_class_scores(ref: np.ndarray, n_classes_in_labels: int | None = None) -> bool:
    """Whether ``ref`` (samples × values) is a class-score vector per sample.

    It is when each sample is a vector of at least 2 values and either every row is a
    probability distribution (values in [0, 1] summing to 1, as after a softmax), or the
    data set's labels are class ids that index into it. A detector's boxes or a landmark
    model's points are neither, so top-1 agreement is not computed for them.
    """
    if ref.ndim != 2 or ref.shape[1] < 2:
        return False
    if n_classes_in_labels is not None and 2 <= n_classes_in_labels <= ref.shape[1]:
        return True
    return bool(np.all(ref >= -1e-6) and np.all(ref <= 1 + 1e-6) and np.allclose(ref.sum(1), 1.0, atol=1e-3))


def constant_reference(ref: np.ndarray) -> bool:
    """True when the reference barely changes across samples (fewer than 2 samples: never)."""
    if ref.shape[0] < 2:
        return False
    rms = float(np.sqrt(np.mean(ref**2)))
    spread = float(np.mean(ref.std(axis=0)))
    return spread <= CONSTANT_SPREAD * rms or (rms == 0.0)


def compare_output(name: str, out: np.ndarray, ref: np.ndarray, n_classes_in_labels: int | None = None) -> OutputFidelity:
    """One output's metrics; ``out`` and ``ref`` are samples × values, float64."""
    err = out - ref
    ref_energy = float((ref**2).sum())
    err_energy = float((err**2).sum())
    if err_energy == 0.0:
        snr = SNR_CAP_DB
    elif ref_energy == 0.0:
        snr = -SNR_CAP_DB
    else:
        snr = min(SNR_CAP_DB, 10.0 * float(np.log10(ref_energy / err_energy)))
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    both_zero = (np.linalg.norm(out, axis=1) == 0) & (np.linalg.norm(ref, axis=1) == 0)
    cos = np.where(norms > 0, (out * ref).sum(1) / np.where(norms > 0, norms, 1), np.where(both_zero, 1.0, 0.0))
    top1 = None
    if is_class_scores(ref, n_classes_in_labels):
        top1 = float((out.argmax(1) == ref.argmax(1)).mean())
    return OutputFidelity(
        name=name,
        cosine=float(cos.mean()),
        snr_db=snr,
        max_abs_error=float(np.abs(err).max()) if err.size else 0.0,
        mean_abs_error=float(np.abs(err).mean()) if err.size else 0.0,
        rel_l2=float(np.sqrt(err_energy / ref_energy)) if ref_energy > 0 else (0.0 if err_energy == 0 else None),
        top1_agreement=top1,
        constant_reference=constant_reference(ref),
    )


def match_outputs(out_names: list[str], ref_names: list[str], out_sizes: list[int], ref_sizes: list[int]) -> list[int]:
    """For each reference output, the index of the variant output it is compared with.

    By name when the variant has every reference name; else by size when every output has a
    size of its own; else by order. Converters rename outputs (a TFLite file's ``Identity_1``
    may be an IR's ``Identity_1:0``), and a signature may list them in another order.
    """
    if len(out_names) != len(ref_names):
        raise ValueError(f"the variant has {len(out_names)} output(s), the fp32 reference {len(ref_names)}")
    if set(ref_names) <= set(out_names) and len(set(out_names)) == len(out_names):
        return [out_names.index(n) for n in ref_names]
    if len(set(ref_sizes)) == len(ref_sizes) and sorted(ref_sizes) == sorted(out_sizes):
        return [out_sizes.index(n) for n in ref_sizes]
    return list(range(len(ref_names)))


def compare(
    outs: list[np.ndarray], refs: list[np.ndarray], names: list[str], n_classes_in_labels: int | None = None
) -> Fidelity:
    """Fidelity of every output (already matched: ``outs[i]`` against ``refs[i]``, named ``names[i]``).

    Each array is samples × values (flattened per sample).
    """
    per = []
    for name, out, ref in zip(names, outs, refs):
        out = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
        ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
        if out.shape != ref.shape:
            raise ValueError(f"output '{name}' has {out.shape[1]} values per sample, its fp32 reference {ref.shape[1]}")
        per.append(compare_output(name, out, ref, n_classes_in_labels))
    return summarize(per, samples=len(refs[0]) if refs else 0)


def summarize(per: list[OutputFidelity], samples: int) -> Fidelity:
    """The record's fidelity: the worst output's figures, with every output kept."""
    worst = min(per, key=lambda o: (o.snr_db, o.cosine))
    top1 = [o.top1_agreement for o in per if o.top1_agreement is not None]
    warnings = tuple(
        f"output '{o.name}': the fp32 reference is (near-)constant across the {samples} samples, so fidelity "
        "compares nothing; use a data set of real inputs" for o in per if o.constant_reference
    )  # fmt: skip
    rel = [o.rel_l2 for o in per if o.rel_l2 is not None]
    return Fidelity(
        samples=samples,
        top1_agreement=min(top1) if top1 else None,
        max_abs_error=max(o.max_abs_error for o in per),
        mean_cosine=min(o.cosine for o in per),
        snr_db=min(o.snr_db for o in per),
        mean_abs_error=max(o.mean_abs_error for o in per),
        rel_l2=max(rel) if rel else None,
        worst_output=worst.name,
        outputs=tuple(per),
        warnings=warnings,
    )
