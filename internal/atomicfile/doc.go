// Package atomicfile writes files so that readers see either the old
// content or the whole new content, never a partial file, and a failure
// leaves nothing behind.
package atomicfile
