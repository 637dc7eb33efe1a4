-- Argo CD health of the operator's kinds (MilvusRoleBinding, MilvusConnection,
-- ClusterMilvusConnection), from the conditions the operator writes: Ready always; Reconciling
-- (retrying with backoff) or Stalled (only a person can fix it), each only while true.
-- Argo CD opens only Lua's base and table libraries here (no string library): hence only `..`
-- and tostring below.
local hs = {}

local function find(conditions, kind)
  for _, condition in ipairs(conditions) do
    if condition.type == kind and condition.status == "True" then
      return condition
    end
  end
  return nil
end

local function explain(condition)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason == "" then
    return message
  end
  if message == "" then
    return reason
  end
  return reason .. ": " .. message
end

local status = obj.status or {}
local conditions = status.conditions or {}
local ready = nil
for _, condition in ipairs(conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end

-- The finalizer is held until Milvus confirms the removal; Ready says what it waits for.
-- (Argo CD itself shows any object being deleted as Progressing, "Pending deletion", before it
-- runs this script; this answer is for the other callers of the script.)
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = "deletion waits: " .. ready.message
  else
    hs.message = "deletion waits for the operator"
  end
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to reconcile"
  return hs
end

-- A condition about an older spec says nothing about this one.
local generation = obj.metadata.generation or 0
local observed = status.observedGeneration or 0
if ready.observedGeneration ~= nil and ready.observedGeneration < observed then
  observed = ready.observedGeneration
end
if observed < generation then
  hs.status = "Progressing"
  hs.message = "generation " .. tostring(generation) .. " not reconciled yet (observed "
    .. tostring(observed) .. ")"
  return hs
end

local stalled = find(conditions, "Stalled")
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = explain(stalled)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end

-- Reconciling=True, or Ready=False/Unknown without it: the operator is still retrying.
local reconciling = find(conditions, "Reconciling")
hs.status = "Progressing"
hs.message = explain(reconciling or ready)
return hs
