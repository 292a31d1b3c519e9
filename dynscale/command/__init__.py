"""The toolkit of commands: what every method's commands are made of (option parsers, option
groups, options from settings dataclasses, and the shared steps after parsing). The ``dynscale``
shell (``dynscale.cli``) and each method's ``commands.py`` build on it."""

from . import options
from .kit import (
    MODEL_FLAGS,
    MODEL_OPTIONS,
    about,
    check_model_options,
    dataset,
    evaluation_device,
    execution,
    inputs,
    model_name,
    model_options,
    refuse,
    report,
    sweep_report,
    timing,
    timing_meta,
    training_config,
)
from .parser import (
    HelpFormatter,
    Parser,
    add_data,
    add_device_option,
    add_execution_options,
    add_fields,
    add_group,
    add_model_options,
    add_quiet,
    add_report_options,
    add_sweep_options,
    add_threads,
    add_timing_options,
    add_training_options,
    fields_of,
    given,
)

__all__ = ["MODEL_FLAGS", "MODEL_OPTIONS", "HelpFormatter", "Parser", "about", "add_data", "add_device_option",
           "add_execution_options", "add_fields", "add_group", "add_model_options", "add_quiet", "add_report_options",
           "add_sweep_options", "add_threads", "add_timing_options", "add_training_options", "check_model_options",
           "dataset", "evaluation_device", "execution", "fields_of", "given", "inputs", "model_name",
           "model_options", "options", "refuse", "report", "sweep_report", "timing", "timing_meta",
           "training_config"]
