/* Files of hooks written or moved through the admin API: clones and the
 * trash folder of deleted hooks. */
#ifndef HOOKD_HOOK_FILES_H
#define HOOKD_HOOK_FILES_H

#include <stddef.h>

#define HK_HOOK_ID_MAX 120

/* Nonzero when id can name a hook file: 1-120 letters, digits, _ or -. */
int hk_hook_id_valid(const char *id);

/* Writes dst_path: the code of src_path, run unchanged, with the name
 * setting replaced by name. Never replaces a file: returns 1 when
 * dst_path exists; else 0, or -1 with err. */
int hk_hook_file_clone(const char *src_path, const char *dst_path,
                       const char *name, char *err, size_t errlen);

/* Moves a deleted hook's file to data_dir/trash/<id>.<UTC time>.<pid>.lua
 * (the new path into out). Returns 0, or -1 with err. */
int hk_hook_file_trash(const char *path, const char *data_dir,
                       const char *id, char *out, size_t outlen, char *err,
                       size_t errlen);

/* Puts a trashed file back (when the rest of a delete failed). */
int hk_hook_file_restore(const char *trashed, const char *path);

#endif
