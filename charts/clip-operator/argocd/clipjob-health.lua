-- Argo CD health check for mememaker.io/ClipJob (Lua 5.1, as Argo CD runs it).
-- Install: argocd-cm key resource.customizations.health.mememaker.io_ClipJob
-- (examples/gitops/argocd-cm-clipjob-health.yaml).
-- Phase Queued/Running -> Progressing, Succeeded -> Healthy, Failed -> Degraded; the kstatus
-- conditions (Ready, Stalled) decide when there is no phase; no status yet -> Progressing.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function failure_message(status)
  local reason = status.reason or "Failed"
  if status.message ~= nil and status.message ~= "" then
    return reason .. ": " .. status.message
  end
  return reason
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for clip-operator to pick up the ClipJob"
  return hs
end

-- A status written for an older generation says nothing about the current spec.
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for clip-operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == nil then
  local stalled = condition(status, "Stalled")
  local ready = condition(status, "Ready")
  if stalled ~= nil and stalled.status == "True" then
    phase = "Failed"
  elseif ready ~= nil and ready.status == "True" then
    phase = "Succeeded"
  end
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  if status.urlExpiresAt ~= nil then
    hs.message = "Clip ready; download URL valid until " .. status.urlExpiresAt
  else
    hs.message = "Clip ready"
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = failure_message(status)
elseif phase == "Queued" then
  hs.status = "Progressing"
  hs.message = status.message or "Waiting for a free in-flight slot or for its Pod"
elseif phase == "Running" then
  hs.status = "Progressing"
  -- status.message may still hold the queue's words: describe the run itself.
  hs.message = "Cutting the clip"
  if status.jobName ~= nil then
    hs.message = hs.message .. " in Job " .. status.jobName
  end
elseif phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for clip-operator to set a phase"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
