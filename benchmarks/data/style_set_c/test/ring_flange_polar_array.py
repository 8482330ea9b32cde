import cadquery as cq
flange = (cq.Workplane("XY").circle(50).circle(20).extrude(10)
          .faces(">Z").workplane().polarArray(35, 0, 360, 6).hole(6))
