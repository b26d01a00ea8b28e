/* A library the ld_preload test preloads: it does nothing. */
int sxscan_preloaded(void) { return 1; }
