/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by the SysmonX BPF objects (sensor.bpf.c, visibility.bpf.c): the mount-aware dentry
 * walk that rebuilds a path in the kernel, and the fd -> struct file look-up.
 *
 * The including file defines DATA_MAX (a power of two: the payload budget), NAME_CHUNK
 * (NAME_MAX + 1) and PATH_DEPTH (components and mount crossings per walk) first.
 */
#ifndef SYSMONX_PATHWALK_BPF_H
#define SYSMONX_PATHWALK_BPF_H

/*
 * Mount-aware dentry walk: append the components of (dentry, vfsmount) leaf first, each
 * NUL-terminated, to data at w->off. Crosses mount points through struct mount. Stops at the
 * root of the mount namespace (or at a detached root). Sets w->trunc when it ran out of depth
 * or room.
 *
 * The loop state lives in map memory (struct walk, volatile accesses): values loaded from a
 * map are unknown scalars to the verifier, so every iteration reaches the loop head in the same
 * abstract state and is pruned, instead of the state count doubling with each branch.
 */
struct walk {
	__u64 d;
	__u64 vm;
	__u64 mnt;
	__u32 off;
	__u32 trunc;
	__u32 done;
	__u32 leaf; /* out: LEAF_* for the first dentry */
};

#define LEAF_PSEUDO 1  /* a dentry of no directory (memfd, shmem): only its name is written */
#define LEAF_DELETED 2 /* unhashed (unlinked) dentry: d_path adds " (deleted)" */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk);
} walkst SEC(".maps");

#define RD(x) (*(volatile typeof(x) *)&(x))
#define WR(x, v) (*(volatile typeof(x) *)&(x) = (v))

static __always_inline struct walk *walk_state(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&walkst, &zero);
}

/* Returns the number of bytes appended at `off`; sets *trunc. */
static __always_inline __u32 walk_path(char *data, struct walk *w, __u32 off, struct dentry *d0,
				       struct vfsmount *vm0, int *trunc)
{
	__u64 moff = bpf_core_field_offset(struct mount, mnt);

	WR(w->d, (__u64)d0);
	WR(w->vm, (__u64)vm0);
	WR(w->mnt, (__u64)vm0 - moff);
	WR(w->off, off);
	WR(w->trunc, 0);
	WR(w->done, 0);
	WR(w->leaf, 0);
	{
		/* what d_path() says of the leaf: a pseudo file (its own parent, not a mount root:
		 * memfd) is named by d_dname as "/NAME (deleted)"; an unhashed dentry that has a
		 * parent was unlinked and gets " (deleted)" */
		struct dentry *p0 = BPF_CORE_READ(d0, d_parent);
		struct dentry *r0 = BPF_CORE_READ(vm0, mnt_root);
		if (d0 == p0 && d0 != r0) {
			__u32 o = off;
			if (o > DATA_MAX - NAME_CHUNK) {
				*trunc = 1;
				return 0;
			}
			const unsigned char *nm = BPF_CORE_READ(d0, d_name.name);
			long n = bpf_probe_read_kernel_str(&data[o & (DATA_MAX - 1)], NAME_CHUNK, nm);
			if (n <= 1)
				return 0;
			WR(w->leaf, LEAF_PSEUDO);
			return (__u32)n;
		}
		if (d0 != p0 && !BPF_CORE_READ(d0, d_hash.pprev))
			WR(w->leaf, LEAF_DELETED);
	}
	for (int i = 0; i < PATH_DEPTH; i++) {
		struct dentry *d = (struct dentry *)RD(w->d);
		struct vfsmount *vm = (struct vfsmount *)RD(w->vm);
		struct mount *mnt = (struct mount *)RD(w->mnt);
		struct dentry *mroot = BPF_CORE_READ(vm, mnt_root);
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		if (d == mroot || d == parent) {
			struct mount *mp = BPF_CORE_READ(mnt, mnt_parent);
			if (d != mroot || mp == mnt || !mp) {
				WR(w->done, 1); /* namespace root, or a detached tree */
				break;
			}
			WR(w->d, (__u64)BPF_CORE_READ(mnt, mnt_mountpoint));
			WR(w->mnt, (__u64)mp);
			WR(w->vm, (__u64)mp + moff);
			continue;
		}
		__u32 o = RD(w->off);
		if (o > DATA_MAX - NAME_CHUNK) {
			WR(w->trunc, 1);
			WR(w->done, 1);
			break;
		}
		const unsigned char *name = BPF_CORE_READ(d, d_name.name);
		long n = bpf_probe_read_kernel_str(&data[o & (DATA_MAX - 1)], NAME_CHUNK, name);
		if (n <= 1) {
			WR(w->done, 1);
			break;
		}
		WR(w->off, o + (__u32)n);
		WR(w->d, (__u64)parent);
	}
	if (!RD(w->done) || RD(w->trunc))
		*trunc = 1;
	__u32 end = RD(w->off);
	if (end < off || end > DATA_MAX)
		return 0;
	return end - off;
}

static __always_inline struct file *fd_file(struct task_struct *t, long fd)
{
	struct file **fds;
	struct file *f = NULL;
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if (fd < 0 || fd >= max)
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

#endif /* SYSMONX_PATHWALK_BPF_H */
