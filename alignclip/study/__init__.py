"""What the study notebooks call: the one module a notebook imports from.

Each notebook starts with :func:`start_study` (its validated parameters and profile), shows :func:`banner`, runs
its evaluations (:func:`evaluate_runs`, :func:`run_sweep`, :func:`evaluate_crf_runs`, ...), compares them with the
paper (:func:`paper_comparison`, :func:`main_table`, :func:`paired_deltas`, ...), draws its figures and ends with
:func:`write_notebook_results`. The submodules:

- :mod:`~alignclip.study.context`: profiles, parameters, datasets and models of a study; the notebook's JSON;
- :mod:`~alignclip.study.runs`: what a run is, grids of runs, their cached evaluation;
- :mod:`~alignclip.study.tables`: paper-vs-ours tables and figures;
- :mod:`~alignclip.study.gains`, :mod:`~alignclip.study.gains_report`: paired gains beside the paper's claims;
- :mod:`~alignclip.study.sweeps`: hyper-parameter sweeps, ablation and plug-in runs;
- :mod:`~alignclip.study.analysis`, :mod:`~alignclip.study.analysis_figures`: Table 1 and the feature maps;
- :mod:`~alignclip.study.bench`: the cost benchmark (Table 11);
- :mod:`~alignclip.study.backbones`: AlignCLIP's modules across CLIP backbones and CCE's VFMs (beyond the paper);
- :mod:`~alignclip.study.crf`: dense CRF runs (Table 13);
- :mod:`~alignclip.study.decisions`: what each open choice of the decisions register changes;
- :mod:`~alignclip.study.qualitative`: qualitative panels;
- :mod:`~alignclip.study.display`: tables formatted for reading (:func:`for_reading`);
- :mod:`~alignclip.study.jobs`, :mod:`~alignclip.study.plan`: the study as shardable jobs, and its cost plan.
"""

import warnings

# huggingface_hub (through timm) imports tqdm.auto, which warns in Jupyter without ipywidgets, printing the path of
# the Python installation into every notebook; the study's own bars are plain text (tqdm.std).
warnings.filterwarnings("ignore", message="IProgress not found")


from alignclip.evaluation.features import collect_domain_features
from alignclip.paper.audit import audit_summary, average_checks, run_audit, write_audit
from alignclip.paper.names import TABLE3_ROWS, TABLE4_DATASETS
from alignclip.study.analysis import (
    NATURAL_DOMAIN,
    RS_DOMAIN,
    bootstrap_domain_gap,
    check_compactness,
    domain_similarity,
    table1_comparison,
)
from alignclip.study.analysis_figures import (
    embed_domains,
    plot_embeddings,
    plot_similarity_distributions,
    separability,
)
from alignclip.study.backbones import (
    MODULE_ROWS,
    STUDY_BACKBONES,
    STUDY_VFMS,
    backbone_average_table,
    backbone_gain_table,
    backbone_gains,
    backbone_miou_table,
    backbone_runs,
    backbone_setup_table,
    plot_backbone_gains,
    prediction_summary,
    prediction_verdicts,
    study_backbones,
    study_runs,
    vfm_gain_table,
    vfm_gains,
    vfm_runs,
)
from alignclip.study.bench import (
    BENCH_HEADERS,
    GROWTH_COLUMNS,
    TABLE11_COLUMNS,
    bench_frame,
    bench_table,
    check_targets,
    cost_note,
    deterministic_summary,
    load_measured_bench,
    measured_summary,
    measured_table,
    plot_breakdown,
    plot_growth,
    plot_table11,
    run_header,
    study_bench,
    study_growth,
    table11_comparison,
)
from alignclip.study.context import (
    NEEDS,
    PROFILES,
    StudyContext,
    banner,
    start_study,
    write_notebook_results,
)
from alignclip.study.crf import crf_run_labels, evaluate_crf_runs
from alignclip.study.decisions import (
    decision_effects,
    decision_runs,
    decision_table,
    plot_decision_forest,
    select_decisions,
)
from alignclip.study.display import for_reading
from alignclip.study.gains import (
    TABLE3,
    TABLE3_CLAIMS,
    TABLE12_PAIRS,
    TABLE13_PAIRS,
    average_gains,
    check_claims,
    claimed_gains,
    paired_deltas,
    paper_deltas,
    paper_gains,
    plugin_table,
    sweep_claims,
)
from alignclip.study.gains_report import (
    deltas_beside_paper,
    deltas_vs_paper,
    plot_deltas,
    plot_gains,
    plot_plugin,
    results_beside_paper,
    rounded,
    wide_comparison,
)
from alignclip.study.plan import full_study_plan, plot_plan
from alignclip.study.qualitative import (
    accuracy_table,
    class_names_of,
    plot_panels,
    predict_all_panels,
)
from alignclip.study.runs import Run, evaluate_runs, grid_runs, switch_pairs, switch_runs
from alignclip.study.sweeps import (
    describe_runs,
    evaluate_sweep,
    plot_sweep,
    plugin_claims,
    plugin_runs,
    run_sweep,
    settings_table,
    sweep_comparison,
    sweep_summary,
    sweep_table,
)
from alignclip.study.tables import main_table, paper_comparison, plot_paper_vs_ours, summary_lines

__all__ = [
    "MODULE_ROWS",
    "STUDY_BACKBONES",
    "STUDY_VFMS",
    "backbone_average_table",
    "backbone_gain_table",
    "backbone_gains",
    "backbone_miou_table",
    "backbone_runs",
    "backbone_setup_table",
    "plot_backbone_gains",
    "prediction_summary",
    "prediction_verdicts",
    "study_backbones",
    "study_runs",
    "vfm_gain_table",
    "vfm_gains",
    "vfm_runs",
    "full_study_plan",
    "plot_plan",
    "NATURAL_DOMAIN",
    "NEEDS",
    "PROFILES",
    "RS_DOMAIN",
    "TABLE3",
    "TABLE3_CLAIMS",
    "TABLE3_ROWS",
    "TABLE4_DATASETS",
    "TABLE12_PAIRS",
    "TABLE13_PAIRS",
    "Run",
    "StudyContext",
    "accuracy_table",
    "average_checks",
    "average_gains",
    "banner",
    "BENCH_HEADERS",
    "GROWTH_COLUMNS",
    "TABLE11_COLUMNS",
    "bench_frame",
    "bench_table",
    "bootstrap_domain_gap",
    "check_claims",
    "check_compactness",
    "check_targets",
    "load_measured_bench",
    "measured_summary",
    "measured_table",
    "claimed_gains",
    "class_names_of",
    "collect_domain_features",
    "cost_note",
    "crf_run_labels",
    "decision_effects",
    "decision_runs",
    "decision_table",
    "deltas_beside_paper",
    "deltas_vs_paper",
    "describe_runs",
    "deterministic_summary",
    "domain_similarity",
    "embed_domains",
    "evaluate_crf_runs",
    "evaluate_runs",
    "evaluate_sweep",
    "for_reading",
    "grid_runs",
    "main_table",
    "paired_deltas",
    "paper_comparison",
    "paper_deltas",
    "paper_gains",
    "plot_breakdown",
    "plot_decision_forest",
    "plot_deltas",
    "plot_embeddings",
    "plot_gains",
    "plot_growth",
    "plot_panels",
    "plot_paper_vs_ours",
    "plot_plugin",
    "plot_similarity_distributions",
    "plot_sweep",
    "plot_table11",
    "plugin_claims",
    "plugin_runs",
    "plugin_table",
    "predict_all_panels",
    "results_beside_paper",
    "rounded",
    "run_audit",
    "audit_summary",
    "run_header",
    "run_sweep",
    "select_decisions",
    "separability",
    "settings_table",
    "start_study",
    "study_bench",
    "study_growth",
    "summary_lines",
    "sweep_claims",
    "sweep_comparison",
    "sweep_summary",
    "sweep_table",
    "switch_pairs",
    "switch_runs",
    "table1_comparison",
    "table11_comparison",
    "wide_comparison",
    "write_audit",
    "write_notebook_results",
]
