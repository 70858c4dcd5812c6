// One line of words for a file system error (its errno code), for the one-line errors of the
// checkpoint and safetensors readers and writers; anything else: the error's first line.
const REASONS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EISDIR: 'is a directory',
  ENOTDIR: 'a parent path is not a directory',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  ERR_FS_FILE_TOO_LARGE: 'file is too large to read into memory',
};

export function fsReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code !== undefined && REASONS[code]) || (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
}
