"""Golden suites: a TOML manifest of models with the layer counts and tolerances a compiler team
expects, and the runner that checks every entry and explains each regression.

* :mod:`trtcompile.golden.manifest` reads and validates manifests (:func:`load_manifest`);
* :mod:`trtcompile.golden.runner` compiles one entry through the compile flow
  (:func:`run_entry`), judges it, renders outcomes (:func:`format_table`, :func:`junit_xml`)
  and writes expectations back (:func:`update_manifest`);
* :mod:`trtcompile.golden.scheduling` runs a whole manifest: serially, on worker processes or
  as Ray tasks (:func:`run_manifest`).

"Golden" means this one thing in trtcompile: a manifest of whole models and what their compile
must produce. A pass's own input/expected-structure cases are its *pass cases*.
"""

from trtcompile.golden.manifest import (
                                        BUILTIN_PREFIX,
                                        ENTRY_KEYS,
                                        EXPECT_KEYS,
                                        PROFILE_KEYS,
                                        Expectations,
                                        GoldenEntry,
                                        Manifest,
                                        load_manifest,
                                        load_parity_data,
)
from trtcompile.golden.runner import (
                                        GoldenOutcome,
                                        Mismatch,
                                        compare,
                                        compile_options,
                                        exit_code,
                                        format_table,
                                        junit_xml,
                                        progress_bar,
                                        run_entry,
                                        summary_line,
                                        update_manifest,
)
from trtcompile.golden.scheduling import run_manifest

__all__ = ["BUILTIN_PREFIX", "ENTRY_KEYS", "EXPECT_KEYS", "PROFILE_KEYS", "Expectations",
           "GoldenEntry", "GoldenOutcome", "Manifest", "Mismatch", "compare", "compile_options",
           "exit_code", "format_table", "junit_xml", "load_manifest", "load_parity_data",
           "progress_bar", "run_entry", "run_manifest", "summary_line", "update_manifest"]
