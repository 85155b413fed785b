"""A deterministic simulator of a zkv cluster: the production replica core, simulated shells.

``zkv.sim.world`` is the world (event queue, network, clocks, disks, clients), ``zkv.sim.disk``
the disk model, ``zkv.sim.run`` the schedules of overlapping faults and their shrinking,
``zkv.sim.checker`` what a healed run must show.  ``zkv sim`` runs it from the command line.
"""
