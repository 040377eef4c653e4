"""The output folder and the files a user names: written whole, never at the cost of a user's file.

A compile writes into its output folder OUT through an :class:`OutputFolder`::

    with OutputFolder(out, protected=[model_path], report="report.json") as folder:
        ...write every output into folder.staging...
        published = folder.publish(["optimized.onnx", "model.engine", "report.json"])
    for line in published.messages():
        log(line)

and writes the copies a user asks for elsewhere (``--save-engine``, ``--report-json``,
``--report-html``) with :func:`write_user_file`, after :func:`check_no_collisions` has refused
copies that would land on an input or on one of the compile's own outputs.

What :meth:`OutputFolder.publish` guarantees:

- *Atomic per compile.* Outputs are staged in a hidden folder inside OUT (so every move is a
  rename on one file system), then moved in under an exclusive lock on OUT, the report last. If
  anything fails or SIGINT/SIGTERM arrives while publishing, every move is undone: OUT ends as it
  was before or holds the complete new result, never a mix. A second compile publishing into the
  same OUT waits for the lock (up to ``lock_timeout`` seconds, then refuses).
- *Only its own files.* Each publish records, in OUT's manifest (:data:`MANIFEST_NAME`), the size
  and SHA-256 of every file it wrote (for a folder, of every file in it). A later compile removes
  an earlier output it does not write again only when the manifest lists it and it is unchanged;
  an output the user edited, replaced or added files to is kept (and said so). Files no compile
  recorded are never touched, whatever their names, with one exception: when the compile writes a
  name the user's own file already has, that file is moved aside to ``<name>.orig`` rather than
  overwritten.
- *Never an input.* An entry of OUT that is or contains a protected path (the input model) is
  neither removed nor overwritten: kept, or moved aside when the compile writes that name.

Only SIGKILL or a power loss mid-publish can leave a mix; a later compile then finds the dead
compile's staging folder and removes it unless it still holds replaced outputs (those stay, so
nothing is lost).

This module is a leaf: it imports only the standard library and :mod:`trtcompile.errors`.
"""

from trtcompile.fsutil.files import (
                                      ASIDE_SUFFIX,
                                      LOCK_NAME,
                                      LOCK_TIMEOUT,
                                      MANIFEST_NAME,
                                      MANIFEST_VERSION,
                                      STAGING_PREFIX,
                                      check_no_collisions,
                                      record,
                                      write_user_file,
)
from trtcompile.fsutil.output_folder import OutputFolder, Published, folder_lock, ours_unchanged

__all__ = ["ASIDE_SUFFIX", "LOCK_NAME", "LOCK_TIMEOUT", "MANIFEST_NAME", "MANIFEST_VERSION",
           "OutputFolder", "Published", "STAGING_PREFIX", "check_no_collisions", "folder_lock",
           "ours_unchanged", "record", "write_user_file"]

